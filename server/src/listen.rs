//! The accept loop of the web and agent listeners, with the limits that keep
//! slow or greedy clients from exhausting the server:
//!
//! - at most `max_connections` connections are open at once; further ones wait
//!   in the kernel's accept backlog until one closes;
//! - request headers must arrive within `header_read_timeout`, which also
//!   closes a keep-alive connection that has been idle that long (slowloris);
//! - the per-connection handshake (TLS on the gateway) runs under the caller's
//!   own deadline.
//!
//! On shutdown the loop stops accepting and gives open connections
//! [`DRAIN_SECS`] to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_SECS: u64 = 30;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
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
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let Some((io, router)) = accept(tcp, addr).await else {
                return;
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(router))
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %addr, error = %e, "connection ended");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(DRAIN_SECS), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_SECS} s; closing them");
    }
}
