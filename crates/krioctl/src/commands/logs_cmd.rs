//! `logs`: reads the container's CRI log file (ContainerStatus.log_path).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::containers::{container_status, resolve_container, status_of};
use super::Ctx;
use crate::cli::LogsArgs;
use crate::error::Error;
use crate::logs::{Decoded, LogLine, LogReader, Stream};

/// How often `-f` looks for new log data.
const POLL: Duration = Duration::from_millis(100);
/// How often `-f` asks the runtime whether the container is still running.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Writes decoded items: stdout lines to stdout, stderr lines to stderr, each
/// with a newline and (with `timestamps`) prefixed by the RFC 3339 time.
/// Malformed lines produce a warning on stderr.
///
/// Errors: [`Error::Write`].
pub fn emit(items: Vec<Decoded>, timestamps: bool) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for d in items {
        match d {
            Decoded::Line(l) => {
                let w: &mut dyn Write = match l.stream {
                    Stream::Stdout => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                write_line(w, &l, timestamps).map_err(Error::Write)?;
            }
            Decoded::Malformed(e) => {
                let _ = writeln!(stderr, "krioctl: skipping malformed log line: {e}");
            }
        }
    }
    stdout.flush().map_err(Error::Write)?;
    stderr.flush().map_err(Error::Write)
}

fn write_line(w: &mut dyn Write, l: &LogLine, timestamps: bool) -> std::io::Result<()> {
    if timestamps {
        w.write_all(l.timestamp.as_bytes())?;
        w.write_all(b" ")?;
    }
    w.write_all(&l.content)?;
    w.write_all(b"\n")
}

/// `krioctl logs [-f] [--tail N] [-t] CONTAINER`.
pub async fn logs(ctx: &mut Ctx, a: LogsArgs) -> Result<(), Error> {
    let id = resolve_container(ctx, &a.container).await?;
    let status = status_of(container_status(ctx, &id, false).await?)?;
    let path = PathBuf::from(&status.log_path);
    if status.log_path.is_empty() || !path.is_absolute() {
        return Err(Error::LogPath { id, path });
    }
    let mut reader = LogReader::open(&path)?;
    emit(reader.read_initial(a.tail)?, a.timestamps)?;
    if a.follow {
        let mut last_check = Instant::now();
        let mut running = status.state <= 1; // created or running
        while running {
            tokio::time::sleep(POLL).await;
            let mut items = Vec::new();
            reader.poll(|d| items.push(d))?;
            emit(items, a.timestamps)?;
            if last_check.elapsed() >= STATUS_EVERY {
                last_check = Instant::now();
                let st = status_of(container_status(ctx, &id, false).await?)?;
                running = st.state <= 1;
            }
        }
        // The monitor may write its last records just after the exit is seen.
        tokio::time::sleep(POLL * 2).await;
        let mut items = Vec::new();
        reader.poll(|d| items.push(d))?;
        emit(items, a.timestamps)?;
    }
    emit(
        reader.finish().into_iter().map(Decoded::Line).collect(),
        a.timestamps,
    )
}
