//! Listeners: the forward proxy, endpoint listeners, the transparent listener, health probes,
//! and the accept loop they share.

pub mod budget;
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

use crate::audit::refusals::{Refusal, RefusalAudit};
use crate::config::Limits;
use crate::upstream::Body;
pub use budget::ConnectionBudget;
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

/// Serve HTTP on one connection until it closes or the broker drains. Each request counts as in
/// flight on the connection's budget slot (see [`budget`]) until its response body is done. A
/// request hyper refuses on its own (a malformed head: 400, an oversized one: 431, a head not
/// sent within `limits.header_read_timeout`) never reaches `service`; it is audited here, as a
/// refusal of the connection's listener and peer.
pub async fn serve_connection<I, F, Fut>(builder: Arc<auto::Builder<TokioExecutor>>, io: I, drain: &Drain, refusals: &RefusalAudit, service: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let Some(watcher) = drain.watcher() else { return };
    let context = budget::current();
    let slot = context.as_ref().and_then(|c| c.slot.clone());
    let service = hyper::service::service_fn(move |req| {
        let in_flight = slot.as_ref().map(|s| s.begin_request());
        let response = service(req);
        async move {
            let Ok(response) = response.await;
            Ok::<_, std::convert::Infallible>(match in_flight {
                Some(guard) => response.map(|body| in_flight_until_done(body, guard)),
                None => response,
            })
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        match e.downcast_ref::<hyper::Error>().and_then(refused_by_hyper) {
            Some((code, reason)) => {
                let request_id = crate::pipeline::new_request_id();
                let listener = context.as_ref().map_or("unknown", |c| &c.listener);
                let mut refusal = Refusal::new(code, listener, &request_id, reason);
                refusal.peer = context.as_ref().and_then(|c| c.peer).map(|p| p.ip());
                refusals.record(refusal);
            }
            None => tracing::debug!(error = %e, "connection ended with an error"),
        }
    }
}

/// The refusals hyper answers itself, by code: the client sent something, and it was not a request.
fn refused_by_hyper(e: &hyper::Error) -> Option<(&'static str, &'static str)> {
    if e.is_parse_too_large() {
        Some(("request_head_too_large", "the request head is larger than limits.max_header_bytes (431)"))
    } else if e.is_parse() {
        Some(("malformed_request_head", "the request head is not valid HTTP (400)"))
    } else if e.is_timeout() {
        Some(("request_head_timeout", "no complete request head within limits.header_read_timeout"))
    } else {
        None
    }
}

/// `body`, holding `guard` until it is done (or dropped): a response still streaming is in flight.
fn in_flight_until_done(body: Body, guard: budget::RequestGuard) -> Body {
    use http_body_util::BodyExt as _;
    InFlight { body, _guard: guard }.boxed()
}

/// A response body and the request guard it releases when hyper drops it. Length and end of
/// stream are the inner body's, so a `Content-Length` answer stays one.
struct InFlight {
    body: Body,
    _guard: budget::RequestGuard,
}

impl http_body::Body for InFlight {
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Accept connections until the task is dropped, each admitted by the listener's own `budget`
/// (see [`budget`] for who is closed or refused when it is full). A refused or evicted
/// connection is closed and audited through `refusals` (rate-limited, with counts), never logged
/// one by one: under a flood that is hundreds of thousands of lines.
pub async fn accept_loop<H, Fut>(listener: TcpListener, budget: ConnectionBudget, refusals: Arc<RefusalAudit>, handle: H)
where
    H: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = budget.listener().clone();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match budget.admit(peer.ip()) {
            Ok(a) => a,
            Err(refused) => {
                drop(stream);
                audit_drop(&refusals, &name, "connection_limit", peer.ip(), &refused.to_string());
                continue;
            }
        };
        if let Some(victim) = admitted.evicted {
            audit_drop(
                &refusals,
                &name,
                "connection_evicted",
                victim,
                "closed a connection with no request in flight to make room for a new one (connection limit)",
            );
        }
        let _ = stream.set_nodelay(true);
        let context = budget::ConnectionContext { listener: name.clone(), peer: Some(peer), slot: Some(admitted.slot) };
        tokio::spawn(budget::run_in(context, handle(stream, peer)));
    }
}

fn audit_drop(refusals: &RefusalAudit, listener: &str, code: &'static str, peer: std::net::IpAddr, reason: &str) {
    let request_id = crate::pipeline::new_request_id();
    let mut refusal = Refusal::new(code, listener, &request_id, reason);
    refusal.peer = Some(peer);
    refusals.record(refusal);
}
