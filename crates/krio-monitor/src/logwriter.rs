//! The CRI container log format writer.
//!
//! Each record is `<timestamp> <stream> <tag> <text>\n` where the timestamp is RFC 3339 with nanoseconds in UTC
//! (`2006-01-02T15:04:05.999999999Z`, parseable by Go's `time.RFC3339Nano`), the stream is `stdout` or `stderr`
//! and the tag is `F` for a full line or `P` for a partial one (kubelet `pkg/kubelet/kuberuntime/logs`).
//!
//! Lines are buffered per stream until their `\n` (containerd semantics): a line longer than the limit is emitted
//! as `P` records of exactly `max_line` bytes followed by one `F` record with the rest; text still unterminated when
//! the stream ends is emitted as `F`. The `\n` itself is not part of the text. Records are written with one
//! `write(2)` per batch on an `O_APPEND` file: nothing is held in user-space buffers beyond incomplete lines.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One of the container's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    /// The CRI log name of the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Formats `t` as RFC 3339 in UTC with 9 fractional digits.
pub fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Appends the records for `data` to `out`: complete lines from `partial ++ data` are emitted, the incomplete
/// tail stays in `partial` (emitted as `P` chunks of `max_line` bytes while it is at least that long). With
/// `eof`, the remaining tail (if any) is emitted as `P`: the program never ended that line, and an `F` record
/// would make readers (kubelet, `kubectl logs`) add a newline it never wrote.
pub fn format_records(
    out: &mut Vec<u8>,
    stream: Stream,
    partial: &mut Vec<u8>,
    data: &[u8],
    ts: &str,
    max_line: usize,
    eof: bool,
) {
    let max_line = max_line.max(1);
    let record = |out: &mut Vec<u8>, tag: &str, text: &[u8]| {
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(text);
        out.push(b'\n');
    };
    partial.extend_from_slice(data);
    let mut start = 0;
    while let Some(pos) = partial[start..].iter().position(|b| *b == b'\n') {
        let mut line = &partial[start..start + pos];
        while line.len() > max_line {
            record(out, "P", &line[..max_line]);
            line = &line[max_line..];
        }
        record(out, "F", line);
        start += pos + 1;
    }
    while partial.len() - start >= max_line {
        record(out, "P", &partial[start..start + max_line]);
        start += max_line;
    }
    if eof && start < partial.len() {
        record(out, "P", &partial[start..]);
        start = partial.len();
    }
    partial.drain(..start);
}

/// Writes CRI log records to a file (or discards them when there is no path), handling reopen for rotation.
#[derive(Debug)]
pub struct CriLogWriter {
    /// The directory opened first and the path walked below it (see [`crate::logfile::open_log_file`]).
    location: Option<(PathBuf, PathBuf)>,
    file: Option<File>,
    max_line: usize,
    /// Size limit of the file in bytes (0: none) and the bytes the file holds now.
    max_size: u64,
    size: u64,
    partial: [Vec<u8>; 2],
    scratch: Vec<u8>,
}

impl CriLogWriter {
    /// Opens (creating, mode 0640, `O_APPEND | O_CLOEXEC`) the log at `path`; `None` discards output. The
    /// file's own directory is opened as given; the file must be a regular file, never followed through a link.
    ///
    /// Errors: as [`crate::logfile::open_log_file`].
    pub fn open(path: Option<&Path>, max_line: usize) -> std::io::Result<Self> {
        Self::open_below(None, path, max_line)
    }

    /// As [`CriLogWriter::open`], but when `path` lies below `log_directory` (the pod's log directory) only
    /// that directory is opened as given: every component below it is walked without following links.
    ///
    /// Errors: as [`crate::logfile::open_log_file`].
    pub fn open_below(
        log_directory: Option<&Path>,
        path: Option<&Path>,
        max_line: usize,
    ) -> std::io::Result<Self> {
        let location = match path {
            Some(p) => {
                let (dir, rel) = crate::logfile::split_log_path(log_directory, p)?;
                Some((dir.to_path_buf(), rel.to_path_buf()))
            }
            None => None,
        };
        let mut w = CriLogWriter {
            location,
            file: None,
            max_line: max_line.max(1),
            max_size: 0,
            size: 0,
            partial: [Vec::new(), Vec::new()],
            scratch: Vec::new(),
        };
        w.reopen()?;
        Ok(w)
    }

    /// Reopens the log path (CRI `ReopenContainerLog`, after the kubelet renamed the old file away).
    ///
    /// Errors: as [`crate::logfile::open_log_file`] (a link, FIFO, directory or anything but a regular file at
    /// the path is refused); the old file stays in use then.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Some((dir, rel)) = &self.location {
            let f = crate::logfile::open_log_file(dir, rel)?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        Ok(())
    }

    /// Limits the log file to `max_size` bytes (0: no limit; CRI-O's `log_size_max`). Before a batch of records
    /// that would take the file past the limit is written, the file is truncated to zero length and the batch
    /// written from its start, so the file keeps the newest output and never exceeds the limit (what conmon
    /// does). A batch larger than the limit by itself keeps only its newest whole records that fit. The limit
    /// also applies to a file that already existed at open or reopen.
    pub fn set_max_size(&mut self, max_size: u64) {
        self.max_size = max_size;
    }

    /// Logs `data` read from `stream` at time `now`.
    ///
    /// Errors: the `write(2)` error (the records are dropped; the writer stays usable).
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> std::io::Result<()> {
        self.emit(stream, data, now, false)
    }

    /// Marks `stream` as ended: a pending unterminated line is written as a partial (`P`) record.
    ///
    /// Errors: the `write(2)` error.
    pub fn close_stream(&mut self, stream: Stream, now: SystemTime) -> std::io::Result<()> {
        self.emit(stream, &[], now, true)
    }

    fn emit(
        &mut self,
        stream: Stream,
        data: &[u8],
        now: SystemTime,
        eof: bool,
    ) -> std::io::Result<()> {
        let ts = timestamp(now);
        self.scratch.clear();
        format_records(
            &mut self.scratch,
            stream,
            &mut self.partial[stream.index()],
            data,
            &ts,
            self.max_line,
            eof,
        );
        if self.scratch.is_empty() {
            return Ok(());
        }
        let mut batch: &[u8] = &self.scratch;
        let result = match self.file.as_mut() {
            Some(f) => {
                let mut truncated = Ok(());
                if self.max_size > 0 && self.size + batch.len() as u64 > self.max_size {
                    batch = newest_records_within(batch, self.max_size);
                    // O_APPEND: after the truncation the next write lands at offset 0.
                    truncated = f.set_len(0);
                    self.size = 0;
                }
                let written = truncated.and_then(|()| f.write_all(batch));
                if written.is_ok() {
                    self.size += batch.len() as u64;
                } else {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(self.size);
                }
                written
            }
            None => Ok(()),
        };
        // Do not keep a large scratch allocation around (keeps the monitor's RSS small).
        if self.scratch.capacity() > 256 * 1024 {
            self.scratch = Vec::new();
        }
        result
    }
}

/// The longest suffix of `records` (each ending in `\n`) made of whole records and at most `max` bytes long.
fn newest_records_within(records: &[u8], max: u64) -> &[u8] {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if records.len() <= max {
        return records;
    }
    let mut start = records.len() - max;
    // `start` falls inside a record unless the byte before it ends one.
    if records[start - 1] != b'\n' {
        start = match records[start..].iter().position(|b| *b == b'\n') {
            Some(p) => start + p + 1,
            None => records.len(),
        };
    }
    &records[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2024-05-06T07:08:09.123456789Z";

    fn run(chunks: &[&[u8]], max: usize, eof: bool) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        let mut partial = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            format_records(
                &mut out,
                Stream::Stdout,
                &mut partial,
                c,
                TS,
                max,
                eof && last,
            );
        }
        (String::from_utf8(out).unwrap(), partial)
    }

    fn recs(lines: &[(&str, &str)]) -> String {
        lines
            .iter()
            .map(|(tag, text)| format!("{TS} stdout {tag} {text}\n"))
            .collect()
    }

    #[test]
    fn full_lines() {
        let (out, rest) = run(&[b"a\nbb\n\n"], 16, false);
        assert_eq!(out, recs(&[("F", "a"), ("F", "bb"), ("F", "")]));
        assert!(rest.is_empty());
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let (out, rest) = run(&[b"hel", b"lo\nwor", b"ld"], 16, false);
        assert_eq!(out, recs(&[("F", "hello")]));
        assert_eq!(rest, b"world");
        let (out, _) = run(&[b"hel", b"lo\nwor", b"ld"], 16, true);
        assert_eq!(out, recs(&[("F", "hello"), ("P", "world")]));
    }

    #[test]
    fn long_lines_become_partials() {
        let (out, _) = run(&[b"abcdefghij\n"], 4, false);
        assert_eq!(out, recs(&[("P", "abcd"), ("P", "efgh"), ("F", "ij")]));
        // Exactly a multiple of the limit: P chunks then the last chunk is F.
        let (out, _) = run(&[b"abcdefgh\n"], 4, false);
        assert_eq!(out, recs(&[("P", "abcd"), ("F", "efgh")]));
        // Unterminated long text: P as the buffer fills, rest stays pending until EOF.
        let (out, rest) = run(&[b"abcdefghij"], 4, false);
        assert_eq!(out, recs(&[("P", "abcd"), ("P", "efgh")]));
        assert_eq!(rest, b"ij");
        let (out, _) = run(&[b"abcdefgh"], 4, true);
        assert_eq!(out, recs(&[("P", "abcd"), ("P", "efgh")]));
        let (out, _) = run(&[b"abcdefghi"], 4, true);
        assert_eq!(out, recs(&[("P", "abcd"), ("P", "efgh"), ("P", "i")]));
    }

    #[test]
    fn a_last_write_without_newline_is_partial() {
        // `printf Hello`: one P record, nothing pending.
        let (out, rest) = run(&[b"Hello", b""], 16, true);
        assert_eq!(out, recs(&[("P", "Hello")]));
        assert!(rest.is_empty());
        // Text before it ended with a newline stays F.
        let (out, _) = run(&[b"a\nb"], 16, true);
        assert_eq!(out, recs(&[("F", "a"), ("P", "b")]));
    }

    #[test]
    fn eof_without_pending_text_writes_nothing() {
        let (out, _) = run(&[b"x\n", b""], 4, true);
        assert_eq!(out, recs(&[("F", "x")]));
    }

    #[test]
    fn size_limit_truncates_and_keeps_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, vec![b'x'; 50]).unwrap();
        let mut w = CriLogWriter::open(Some(&path), 64).unwrap();
        let rec_len = format!("{TS} stdout F 0000\n").len() as u64;
        w.set_max_size(rec_len * 3);
        let now = SystemTime::now();
        let mut max_seen = 0;
        for i in 0..10 {
            w.write(Stream::Stdout, format!("{i:04}\n").as_bytes(), now)
                .unwrap();
            max_seen = max_seen.max(std::fs::metadata(&path).unwrap().len());
        }
        assert!(max_seen <= rec_len * 3, "{max_seen}");
        let text = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = text.lines().map(|l| &l[l.len() - 4..]).collect();
        // 50 bytes were there: 0000 fit beside them, then truncations every third record.
        assert_eq!(texts.last(), Some(&"0009"), "{text}");
        assert!(!text.contains('x') && !text.contains("0000"), "{text}");
        // One batch bigger than the limit keeps its newest whole records.
        w.write(Stream::Stdout, b"aaaa\nbbbb\ncccc\ndddd\neeee\n", now)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = text.lines().map(|l| &l[l.len() - 4..]).collect();
        assert_eq!(texts, ["cccc", "dddd", "eeee"]);
    }

    #[test]
    fn newest_records_cut_at_record_boundaries() {
        assert_eq!(newest_records_within(b"ab\ncd\n", 10), b"ab\ncd\n");
        assert_eq!(newest_records_within(b"ab\ncd\n", 3), b"cd\n");
        assert_eq!(newest_records_within(b"ab\ncd\n", 4), b"cd\n");
        assert_eq!(newest_records_within(b"ab\ncd\n", 2), b"");
    }

    #[test]
    fn timestamp_is_rfc3339_nano() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let s = timestamp(t);
        assert_eq!(s, "2023-11-14T22:13:20.000000005Z");
        let back = chrono::DateTime::parse_from_rfc3339(&s).unwrap();
        assert_eq!(back.timestamp_nanos_opt(), Some(1_700_000_000_000_000_005));
        let now = timestamp(SystemTime::now());
        assert_eq!(now.len(), 30, "{now}");
        chrono::DateTime::parse_from_rfc3339(&now).unwrap();
    }

    #[test]
    fn writer_tags_streams_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = CriLogWriter::open(Some(&path), 16).unwrap();
        let now = SystemTime::now();
        w.write(Stream::Stdout, b"out1\nout", now).unwrap();
        w.write(Stream::Stderr, b"err1\n", now).unwrap();
        w.close_stream(Stream::Stdout, now).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Vec<(String, String, String)> = text
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                chrono::DateTime::parse_from_rfc3339(ts).unwrap();
                (
                    it.next().unwrap().into(),
                    it.next().unwrap().into(),
                    it.next().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            parsed,
            vec![
                ("stdout".into(), "F".into(), "out1".into()),
                ("stderr".into(), "F".into(), "err1".into()),
                ("stdout".into(), "P".into(), "out".into()),
            ]
        );
        // Rotation: rename, reopen, new records land in the new file.
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stderr, b"after\n", now).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(" stderr F after\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
        // No path: everything is discarded without error.
        let mut null = CriLogWriter::open(None, 16).unwrap();
        null.write(Stream::Stdout, b"x\n", now).unwrap();
    }
}
