//! The one place that sees every CRI call as it arrives and as it ends, below tonic's routing:
//! a tower layer over the gRPC server. It keeps the table of calls in flight that `Status`
//! (verbose) reports, and enforces the caller's deadline (`grpc-timeout`) itself. A per-call
//! tracing span belongs here too, so that everything krio does around a whole call lives in
//! one layer.
//!
//! Why the deadline is enforced here: tonic's server also honours `grpc-timeout` (its
//! `GrpcTimeout` layer, outside every layer given to the builder), but answers an expired one
//! with `CANCELLED` ("Timeout expired"). gRPC says a server whose deadline passes ends the call
//! with `DEADLINE_EXCEEDED`, as grpc-go (containerd, CRI-O) does; a client whose own timer is a
//! little late (critest "should timeout if requested" with a 1 ms deadline) would otherwise see
//! `CANCELLED` now and then. This layer starts its timer inside tonic's, with the same
//! duration, so it never fires later; and tonic polls the inner call before its own timer, so
//! an expired deadline always meets this layer's answer first.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The calls being served now.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    calls: Mutex<BTreeMap<u64, (String, Instant)>>,
}

/// One call in flight, as `Status` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallInfo {
    /// The CRI method, e.g. `RunPodSandbox`.
    pub rpc: String,
    /// Milliseconds since the call arrived.
    pub age_ms: u64,
}

/// Removes its call from the table when dropped (the call answered, or its client went away).
struct Entry {
    table: Arc<InFlight>,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (String, Instant)>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(self: &Arc<Self>, rpc: &str) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (rpc.to_string(), Instant::now()));
        Entry {
            table: self.clone(),
            id,
        }
    }

    /// The calls in flight, oldest first.
    pub fn snapshot(&self) -> Vec<CallInfo> {
        self.lock()
            .values()
            .map(|(rpc, t)| CallInfo {
                rpc: rpc.clone(),
                age_ms: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }
}

/// The tower layer to put over the CRI gRPC server ([`crate::Krio::calls_layer`]).
#[derive(Debug, Clone)]
pub struct CallsLayer(pub(crate) Arc<InFlight>);

impl<S> tower::Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallsService {
            inner,
            table: self.0.clone(),
        }
    }
}

/// [`CallsLayer`] around one service.
#[derive(Debug, Clone)]
pub struct CallsService<S> {
    inner: S,
    table: Arc<InFlight>,
}

/// The CRI method of a gRPC request path (`/runtime.v1.RuntimeService/Version` → `Version`).
fn method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The caller's deadline from the `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits
/// and a unit, `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
/// nanoseconds). `None` when the header is absent or malformed (as tonic treats it: no
/// deadline).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match value.as_bytes().last()? {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, B> tower::Service<http::Request<B>> for CallsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = method(req.uri().path()).to_string();
        let entry = self.table.begin(&rpc);
        // Taken now, synchronously: tonic's own timer for the same duration was started just
        // before this call, so this deadline is never the later one.
        let deadline = grpc_timeout(req.headers()).map(|d| tokio::time::Instant::now() + d);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                let r = fut.await;
                drop(entry);
                return r;
            };
            let mut fut = std::pin::pin!(fut);
            let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
            let r = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                // The clock as well as the timer: tonic's timer, set later, may have been
                // fired by the driver before this one has.
                if tokio::time::Instant::now() >= deadline || timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            drop(entry);
            match r {
                Some(r) => r,
                None => {
                    tracing::debug!(rpc = %rpc, "deadline exceeded");
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "{rpc}: the caller's deadline (grpc-timeout) expired"
                    ))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_the_table_when_dropped() {
        let t = Arc::new(InFlight::default());
        let a = t.begin("RunPodSandbox");
        let b = t.begin("PullImage");
        let names: Vec<String> = t.snapshot().into_iter().map(|c| c.rpc).collect();
        assert_eq!(names, ["RunPodSandbox", "PullImage"]);
        drop(a);
        assert_eq!(t.snapshot().len(), 1);
        drop(b);
        assert!(t.snapshot().is_empty());
        assert_eq!(method("/runtime.v1.RuntimeService/Version"), "Version");
    }

    #[test]
    fn grpc_timeout_header_units() {
        let parse = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("500u"), Some(Duration::from_micros(500)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1m", "1.5S", "S1"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    /// An inner call slower than the caller's deadline is answered DEADLINE_EXCEEDED by the
    /// layer; a faster one gets its own answer.
    #[tokio::test]
    async fn an_expired_deadline_is_deadline_exceeded() {
        use tower::{Layer, Service, ServiceExt};
        let slow = tower::service_fn(|req: http::Request<()>| async move {
            let ms: u64 = req.uri().path().trim_start_matches('/').parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = CallsLayer(Arc::new(InFlight::default())).layer(slow);
        let call = |ms: u64, timeout: &str| {
            http::Request::builder()
                .uri(format!("/{ms}"))
                .header("grpc-timeout", timeout)
                .body(())
                .unwrap()
        };
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(call(5_000, "20m"))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(r.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(call(0, "5S"))
            .await
            .unwrap();
        assert!(tonic::Status::from_header_map(r.headers()).is_none());
    }
}
