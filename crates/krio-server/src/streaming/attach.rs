//! Attach behind the streaming server: a client's streams joined to the container's monitor
//! through its attach socket (`krio_monitor::attach` describes the framed protocol). The
//! monitor owns the container's stdin and terminal and fans its output out to every session,
//! so attach works the same after a daemon restart.

use bytes::Bytes;
use krio_monitor::attach::{self as proto, FrameKind, OpenFlags, HEADER_LEN};
use krio_stream::conn::ServerSession;
use krio_stream::remotecommand::{Outcome, StreamOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Krio;

/// Frames queued for the monitor before the client's input waits.
const TO_MONITOR_QUEUE: usize = 16;

/// The name used in the session's error messages.
fn command() -> Vec<String> {
    vec!["attach".to_string()]
}

/// Connects to the attach socket of container `id`.
async fn connect(krio: &Krio, id: &str) -> std::io::Result<tokio::net::UnixStream> {
    let path = proto::attach_socket_path(&krio.container_run_dir(id));
    let std_stream = tokio::task::spawn_blocking(move || proto::connect(&path))
        .await
        .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std_stream)
}

/// Attaches `session` to container `id` until the container exits (the session then ends with
/// success, as kubelet's attach does) or the client goes away (the container is untouched;
/// with `stdin_once` the monitor closes its stdin).
pub(super) async fn run(krio: &Krio, id: &str, opts: StreamOptions, mut session: ServerSession) {
    if let Err(e) = krio.running_container(id) {
        return session
            .finish(&command(), &Outcome::Failed(e.to_string()))
            .await;
    }
    let conn = match connect(krio, id).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "container {id}: its monitor serves no attach (it exited, or was started by a krio without attach): {e}"
            );
            return session.finish(&command(), &Outcome::Failed(msg)).await;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let (to_monitor, mut frames) = mpsc::channel::<Vec<u8>>(TO_MONITOR_QUEUE);
    let open = OpenFlags {
        stdin: opts.stdin && session.stdin.is_some(),
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let first = proto::encode(FrameKind::Open, &[open.to_byte()]);
        if wr.write_all(&first).await.is_err() {
            return;
        }
        while let Some(f) = frames.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
        // Dropping the write half would shut the socket's sending side, which the monitor
        // takes for the session's end: hold it until the session is over (the task is
        // aborted then).
        std::future::pending::<()>().await;
        drop(wr);
    });
    if let Some(mut input) = session.stdin.take() {
        let tx = to_monitor.clone();
        tasks.spawn(async move {
            while let Some(chunk) = input.recv().await {
                if tx
                    .send(proto::encode(FrameKind::Stdin, &chunk))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // The client closed its stdin (or left).
            let _ = tx.send(proto::encode(FrameKind::CloseStdin, &[])).await;
        });
    }
    if let Some(mut resize) = session.resize.take() {
        let tx = to_monitor.clone();
        tasks.spawn(async move {
            while let Some(s) = resize.recv().await {
                if tx
                    .send(proto::resize_frame(s.width, s.height))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    drop(to_monitor);
    let (stdout, stderr) = (session.stdout.clone(), session.stderr.clone());
    let relay = async move {
        let mut head = [0u8; HEADER_LEN];
        let mut payload = Vec::new();
        loop {
            if rd.read_exact(&mut head).await.is_err() {
                return Outcome::Failed("the container's monitor closed the session".into());
            }
            let (kind, len) = match proto::parse_header(&head) {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => {
                    return Outcome::Failed("the container's monitor broke the protocol".into())
                }
            };
            payload.resize(len, 0);
            if rd.read_exact(&mut payload).await.is_err() {
                return Outcome::Failed("the container's monitor closed the session".into());
            }
            let sink = match kind {
                FrameKind::Stdout => stdout.as_ref(),
                FrameKind::Stderr => stderr.as_ref(),
                FrameKind::Exit => return Outcome::Exited(0),
                _ => None,
            };
            if let Some(s) = sink {
                // Waiting here is the backpressure: the monitor drops a session that falls
                // too far behind, never the log.
                if s.write(Bytes::copy_from_slice(&payload)).await.is_err() {
                    return Outcome::Failed("client disconnected".into());
                }
            }
        }
    };
    let mut gone = session.gone();
    let outcome = tokio::select! {
        o = relay => o,
        _ = gone.wait_for(|g| *g) => Outcome::Failed("client disconnected".into()),
    };
    // Dropping the tasks closes the connection: the monitor forgets this session.
    tasks.abort_all();
    tracing::debug!(container = id, ?outcome, "attach: session ended");
    session.finish(&command(), &outcome).await;
}
