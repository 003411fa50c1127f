//! Listeners: the forward proxy, endpoint listeners, the transparent listener, health probes,
//! and the accept loop they share.

pub mod drain;
pub mod endpoint;
pub mod forward;
pub mod health;
mod intercept;
pub mod passthrough;
mod refuse;
mod rewind;
pub mod sni;
pub mod transparent;
pub mod tunnel;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::upstream::Body;
pub use drain::{Drain, Tunnels};

/// The HTTP server settings every listener uses: header limits and timeouts from config.
pub fn server_builder(limits: &Limits, http1_only: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(limits.max_header_bytes).keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(limits.idle_timeout / 4);
    if http1_only {
        b = b.http1_only();
    }
    b
}

/// Serve HTTP on one connection until it closes or the broker drains.
pub async fn serve_connection<I, F, Fut>(builder: Arc<auto::Builder<TokioExecutor>>, io: I, drain: &Drain, service: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let Some(watcher) = drain.watcher() else { return };
    let service = hyper::service::service_fn(service);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accept connections forever, at most `limits.max_connections` at once across all listeners.
pub async fn accept_loop<H, Fut>(listener: TcpListener, connections: Arc<Semaphore>, name: &'static str, handle: H)
where
    H: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(listener = name, %peer, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let fut = handle(stream, peer);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}
