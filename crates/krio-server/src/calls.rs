//! The one place that sees every CRI call as it arrives and as it ends, below tonic's routing:
//! a tower layer over the gRPC server. It keeps the table of calls in flight that `Status`
//! (verbose) reports. A per-call tracing span belongs here too, so that everything krio does
//! around a whole call lives in one layer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

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

impl<S, B> tower::Service<http::Request<B>> for CallsService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let entry = self.table.begin(method(req.uri().path()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(entry);
            r
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
}
