//! The accept loop of the web and agent listeners, with the limits that keep
//! slow or greedy clients from exhausting the server:
//!
//! - at most `max_connections` connections are open at once; further ones wait
//!   in the kernel's accept backlog until one closes;
//! - request headers must arrive within `header_read_timeout` (HTTP/1.1,
//!   slowloris);
//! - a connection with no request in progress for `header_read_timeout` is
//!   closed gracefully, whether it speaks HTTP/1.1 (an idle keep-alive) or
//!   HTTP/2 (where hyper has no timeout of its own, so a client could otherwise
//!   hold a connection and its permit for ever), and dropped if it is still
//!   open and idle that long again (an HTTP/2 client that ignores the
//!   GOAWAY and its PING). A long-poll in progress keeps
//!   its connection: an agent that polls again as soon as an answer arrives
//!   holds one connection for good, and its metrics and results ride along on
//!   it over HTTP/2;
//! - the per-connection handshake (TLS on the gateway) runs under the caller's
//!   own deadline.
//!
//! On shutdown the loop stops accepting, asks every open connection to finish
//! gracefully and gives them [`DRAIN_SECS`] to do so.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_SECS: u64 = 30;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// The header deadline, and how long a connection may sit with no request.
    pub header_read_timeout: Duration,
}

/// Serves `listener` until `shutdown` completes. `accept` turns each TCP
/// connection into the stream to speak HTTP on and the router to serve it
/// with (with per-connection extensions); `None` drops the connection.
pub async fn serve<A, Fut, IO>(
    listener: TcpListener,
    limits: Limits,
    accept: A,
    shutdown: impl Future<Output = ()>,
) where
    A: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<(IO, Router)>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before we
                    // took it: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let accept = accept.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some((io, router)) = accept(tcp, addr).await else {
                return;
            };
            serve_connection(io, router, addr, limits.header_read_timeout, stop).await;
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(DRAIN_SECS), permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_SECS} s; closing them");
    }
}

/// Speaks HTTP/1.1 or HTTP/2 (as the client chose) on one connection until it
/// ends, closing it gracefully once it has had no request in progress for
/// `idle`, or when `stop` turns true. A connection still open and idle for
/// another `idle` after that graceful close is dropped.
async fn serve_connection<IO>(
    io: IO,
    router: Router,
    addr: SocketAddr,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (in_flight, in_flight_rx) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&in_flight);
        let router = router.clone();
        async move {
            let res = router.oneshot(req).await;
            drop(busy);
            res
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder.http2().timer(TokioTimer::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle_out = idle_for(in_flight_rx.clone(), idle);
    tokio::pin!(idle_out);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %addr, error = %e, "connection ended");
                }
                return;
            }
            () = &mut idle_out => {
                if closing {
                    // Still nothing in progress after asking for a graceful
                    // close: an HTTP/2 client that does not answer the
                    // closing PING would keep it open. Drop it.
                    tracing::debug!(peer = %addr, "idle connection dropped");
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
                idle_out.set(idle_for(in_flight_rx.clone(), idle));
            }
            r = stop.wait_for(|stop| *stop), if !closing => {
                closing = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// One request in progress on a connection, from its head to its response
/// head (the body of a response is sent after; a graceful close lets it finish).
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn enter(in_flight: &Arc<watch::Sender<usize>>) -> Busy {
        in_flight.send_modify(|n| *n += 1);
        Busy(in_flight.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Completes once no request has been in progress for `idle` in a row.
async fn idle_for(mut in_flight: watch::Receiver<usize>, idle: Duration) {
    loop {
        if *in_flight.borrow_and_update() > 0 {
            if in_flight.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(idle) => return,
            r = in_flight.changed() => if r.is_err() {
                return std::future::pending().await;
            }
        }
    }
}
