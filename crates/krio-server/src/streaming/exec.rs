//! Exec behind the streaming server: `runc exec` wired to a client's streams.

use std::time::Duration;

use bytes::Bytes;
use krio_stream::conn::{ServerSession, Sink};
use krio_stream::remotecommand::{Outcome, StreamOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::Krio;

/// How long a tty exec waits for the client's first terminal size before it starts, so the
/// process never sees a 0x0 terminal (kubectl and crictl send the size at once).
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(1);

async fn pump(mut from: Box<dyn AsyncRead + Send + Unpin>, to: Sink) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs `cmd` in container `id` for `session` until the process exits (its code goes on the
/// error stream) or the client goes away (the process is killed and reaped).
pub(super) async fn run(
    krio: &Krio,
    id: &str,
    cmd: Vec<String>,
    opts: StreamOptions,
    mut session: ServerSession,
) {
    let fail = |m: String| Outcome::Failed(m);
    let rec = match krio.running_container(id) {
        Ok(r) => r,
        Err(e) => return session.finish(&cmd, &fail(e.to_string())).await,
    };
    let runtime = match krio.runtime(rec.runtime_handler()) {
        Ok(r) => r,
        Err(e) => return session.finish(&cmd, &fail(e.to_string())).await,
    };
    let mut resize = session.resize.take();
    let mut size = None;
    if opts.tty {
        if let Some(r) = resize.as_mut() {
            if let Ok(Some(s)) = tokio::time::timeout(FIRST_SIZE_WAIT, r.recv()).await {
                size = Some((s.width, s.height));
            }
        }
    }
    tracing::debug!(container = id, ?size, tty = opts.tty, "exec: starting");
    let mut proc = match runtime
        .exec_streaming(
            id,
            &krio_oci::ExecStreamOptions {
                args: cmd.clone(),
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
                tty: opts.tty,
                size,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return session.finish(&cmd, &fail(e.to_string())).await,
    };
    let mut outputs = tokio::task::JoinSet::new();
    if let (Some(from), Some(to)) = (proc.stdout.take(), session.stdout.clone()) {
        outputs.spawn(pump(from, to));
    }
    if let (Some(from), Some(to)) = (proc.stderr.take(), session.stderr.clone()) {
        outputs.spawn(pump(from, to));
    }
    let input = match (proc.stdin.take(), session.stdin.take()) {
        (Some(mut to), Some(mut from)) => Some(tokio::spawn(async move {
            while let Some(chunk) = from.recv().await {
                if to.write_all(&chunk).await.is_err() || to.flush().await.is_err() {
                    return;
                }
            }
            // The client closed stdin: the process reads EOF (a pipe), or nothing is done to
            // a tty, where EOF is a character the client sends.
            let _ = to.shutdown().await;
        })),
        _ => None,
    };
    let resizer = proc.resizer();
    // runc copies our terminal's size to the container's on SIGWINCH, once it is ready for
    // the signal: send the first size then.
    if let (Some(r), Some((w, h))) = (resizer.clone(), size) {
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !r.started() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = r.resize(w, h);
        });
    }
    let mut gone = session.gone();
    let status = loop {
        tokio::select! {
            r = proc.wait() => break Some(r),
            s = async { match resize.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                match s {
                    Some(s) => {
                        if let Some(Err(e)) = resizer.as_ref().map(|r| r.resize(s.width, s.height)) {
                            tracing::debug!(error = %e, "exec: resize");
                        }
                    }
                    None => resize = None,
                }
            }
            _ = gone.wait_for(|g| *g) => break None,
        }
    };
    if let Some(i) = &input {
        i.abort();
    }
    let Some(status) = status else {
        // The client left: kill its process only, and reap it.
        proc.kill();
        let _ = proc.wait().await;
        outputs.abort_all();
        tracing::debug!(container = id, "exec client disconnected; process killed");
        return session
            .finish(&cmd, &fail("client disconnected".into()))
            .await;
    };
    // All output is delivered before the status, however slowly the client reads; a child
    // left in the background holding the pipes keeps the session open, as with kubelet. A
    // client that leaves ends it.
    tokio::select! {
        _ = async { while outputs.join_next().await.is_some() {} } => {}
        _ = gone.wait_for(|g| *g) => {}
    }
    outputs.abort_all();
    drop(proc);
    let outcome = match status {
        Ok(code) => Outcome::Exited(code),
        Err(e) => fail(e.to_string()),
    };
    session.finish(&cmd, &outcome).await;
}
