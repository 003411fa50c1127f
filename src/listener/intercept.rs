//! Inside an accepted CONNECT to a routed host: TLS interception (passthrough tunnels are in
//! [`super::passthrough`]).

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::{serve_connection, Drain};
use crate::broker::Broker;
use crate::identity::ConnectionIdentity;
use crate::pipeline::{self, Target};

/// Terminate TLS with a leaf for the CONNECT host and handle the requests inside one by one.
/// The CONNECT target, not the inner Host header, decides where requests go: an agent cannot
/// CONNECT to one routed host and then address another. Likewise the identity the CONNECT
/// proved is the identity of every request inside.
pub async fn intercept(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    target: Arc<Target>,
    identity: ConnectionIdentity,
    upgrade: OnUpgrade,
) {
    let upgraded = match upgrade.await {
        Ok(u) => u,
        Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
    };
    serve_intercepted(broker, builder, drain, target, Some(identity), TokioIo::new(upgraded)).await;
}

/// Terminate TLS on an agent stream (a CONNECT tunnel, or a transparently redirected connection
/// whose ClientHello is replayed) and handle the requests inside for `target`.
pub async fn intercept_stream<I>(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, target: Arc<Target>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_intercepted(broker, builder, drain, target, None, io).await;
}

/// TLS termination and the request loop; `identity` (when the stream proved one) rides on each request.
async fn serve_intercepted<I>(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    target: Arc<Target>,
    identity: Option<ConnectionIdentity>,
    io: I,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = match broker.ca.server_config(&target.host).await {
        Ok(c) => c,
        Err(e) => return tracing::error!(host = %target.host, error = %e, "cannot mint a leaf certificate"),
    };
    let handshake = TlsAcceptor::from(config).accept(io);
    let tls = match tokio::time::timeout(broker.config.limits.header_read_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        // An agent can fail handshakes at will: audited and logged through the rate-limited
        // refusal auditor rather than a log line each.
        Ok(Err(e)) => {
            return refuse_handshake(
                &broker,
                &target.host,
                "agent_tls_handshake_failed",
                &format!("agent TLS handshake failed (does it trust the broker CA?): {e}"),
            )
        }
        Err(_) => return refuse_handshake(&broker, &target.host, "agent_tls_handshake_timeout", "agent TLS handshake timed out"),
    };
    serve_connection(builder, tls, &drain, &broker.refusals.clone(), move |mut req| {
        if let Some(identity) = &identity {
            req.extensions_mut().insert(identity.clone());
        }
        pipeline::handle(broker.clone(), target.clone(), req)
    })
    .await;
}

/// Record a failed or timed-out agent TLS handshake with the connection's listener and peer.
fn refuse_handshake(broker: &Broker, host: &str, code: &'static str, reason: &str) {
    let ctx = super::budget::current();
    let listener = ctx.as_ref().map_or("proxy", |c| &*c.listener);
    let request_id = crate::pipeline::new_request_id();
    let mut refusal = crate::audit::Refusal::new(code, listener, &request_id, reason);
    refusal.peer = ctx.as_ref().and_then(|c| c.peer).map(|p| p.ip());
    refusal.target = Some(host);
    broker.refusals.record(refusal);
}
