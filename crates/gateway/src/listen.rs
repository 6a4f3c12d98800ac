//! The HTTP listener: accepts TCP connections and serves each with hyper.
//!
//! Written out rather than `axum::serve` for what that does not expose:
//!
//! - HTTP/1.1 only. (An auto-detecting server reads the first bytes to tell
//!   HTTP/1 from an HTTP/2 preface with no deadline, and h2c has none of the
//!   deadlines below; put HTTP/2 in the proxy in front.)
//! - A deadline on every request head, from the socket's first byte (a
//!   socket that sends nothing is cut as a slowloris is) and again between
//!   keep-alive requests. The body's deadline is a layer on the router.
//! - Every accepted socket counted, under a cap: past it a new socket is
//!   closed at once, so a flood of silent sockets cannot take the file
//!   descriptors the node needs for everyone else.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::limits::HttpConnections;

/// Serves `app` on `listener` until `shutdown`, then waits up to `grace`
/// for HTTP requests in flight (upgraded WebSockets are the gateway's own
/// tasks and are not waited for here). Returns when the grace period ends,
/// counted from the shutdown, for the caller's later phases to share.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    sockets: &HttpConnections,
    shutdown: CancellationToken,
    grace: Duration,
) -> tokio::time::Instant {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let tasks = TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin, and keep serving who is connected.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(slot) = sockets.take(addr.ip()) else {
            // Closed at once: a flood of sockets must not hold descriptors.
            drop(tcp);
            continue;
        };
        // Writes are coalesced per connection already (see ws.rs); Nagle
        // would only add the peer's delayed-ACK wait to each flush.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(addr));
            app.clone().oneshot(request.map(Body::new))
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            // The socket's slot is held until hyper lets go of it (an
            // upgraded WebSocket is counted under MAX_CONNECTIONS instead).
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    let deadline = tokio::time::Instant::now() + grace;
    drop(listener);
    tasks.close();
    if tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period");
    }
    deadline
}

/// Serves `/metrics` (Prometheus text from `handle`) and `/healthz` on
/// `listener` until `shutdown`: the listener of a process that is not a node
/// (`switchboard archive` with `METRICS_ADDR`).
pub async fn serve_metrics(
    listener: TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = handle.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let sockets = HttpConnections::new(256, 0, crate::peer::TrustedProxies::default());
    serve_http(
        listener,
        app,
        Duration::from_secs(10),
        &sockets,
        shutdown,
        Duration::from_secs(1),
    )
    .await;
}
