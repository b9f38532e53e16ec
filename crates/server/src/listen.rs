//! The accept loop, with the limits a server reachable on a network needs (issue 15's
//! exposure): a header-read timeout (a client that sends its headers slowly, or never, is
//! cut off instead of holding a connection), a cap on open connections, and a cap per
//! client address (an HTTP/1.1 connection carries one request at a time, so this also
//! bounds each address's concurrent requests). axum's own `serve` has none of these
//! settings, so connections are served here with hyper directly.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::error::ApiError;

/// The largest request head (request line and headers) read.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long running requests get to finish once the server is told to stop.
const DRAIN: Duration = Duration::from_secs(30);

/// The connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most; more are closed as they arrive.
    pub max_connections: usize,
    /// Open connections per client address at most; more are answered 429.
    pub max_per_address: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: 256,
            max_per_address: 32,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per client address, released when a connection ends.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn enter(&self, ip: IpAddr, max: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, ip: IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the open
/// connections finish their current requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let admitted = per_address.enter(peer.ip(), limits.max_per_address);
        let per_address = per_address.clone();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let service = move |req: Request<Incoming>| {
                let app = app.clone();
                async move {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if !admitted {
                        return Ok(too_many_connections(peer));
                    }
                    app.oneshot(req).await
                }
            };
            let service = TowerToHyperService::new(tower::service_fn(service));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // Headers larger than this are refused (431) instead of buffered.
                .max_buf_size(MAX_HEADER_BYTES);
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let stopping = async move {
                // The guard `wait_for` returns is dropped here, not held across awaits.
                let _ = stop.wait_for(|s| *s).await.map(|_| ());
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            if admitted {
                per_address.leave(peer.ip());
            }
            drop(slot);
        });
    }
    let _ = stop_tx.send(true);
    // Give running requests the connections' graceful shutdown; the slots come back
    // as they finish.
    let drained = open.acquire_many(limits.max_connections as u32);
    let _ = tokio::time::timeout(DRAIN, drained).await;
}

fn too_many_connections(peer: SocketAddr) -> axum::response::Response {
    ApiError {
        retry_after: Some(1),
        ..ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many open connections from {}", peer.ip()),
            Some("rate_limit_exceeded"),
        )
    }
    .into_response()
}
