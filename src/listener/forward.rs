//! The forward proxy (`HTTP_PROXY` / `HTTPS_PROXY`): absolute-form requests and `CONNECT`.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::refuse::Refuser;
use super::{budget, intercept, passthrough, serve_connection, Drain};
use crate::broker::Broker;
use crate::identity::ConnectionIdentity;
use crate::pipeline::{self, new_request_id, BrokerError, Target};
use crate::upstream::{full, Body};

/// The listener name in refusal records.
const LISTENER: &str = "proxy";

/// Serve one agent connection to the proxy port. With `identity.mode: mtls` the port speaks TLS
/// and the client certificate names the agent for every request on the connection.
pub async fn serve(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, stream: TcpStream) {
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let Some(mtls) = broker.identities.mtls() else {
        return serve_io(broker, builder, drain, stream, peer, None).await;
    };
    match mtls.accept(stream, broker.config.limits.header_read_timeout).await {
        Ok((tls, agent)) => {
            let identity = ConnectionIdentity(broker.identities.for_certificate(agent));
            tracing::debug!(?peer, agent_id = %identity.0.agent_id, tenant = %identity.0.tenant, "agent connected with a client certificate");
            serve_io(broker, builder, drain, tls, peer, Some(identity)).await
        }
        Err(reason) => {
            let refuser = Refuser { broker: &broker, listener: LISTENER, peer, agent: None };
            refuser.record("client_certificate_refused", None, &format!("refused a proxy connection without a valid client certificate: {reason}"));
        }
    }
}

async fn serve_io<I>(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    io: I,
    peer: Option<IpAddr>,
    identity: Option<ConnectionIdentity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (b, d, inner_builder) = (broker.clone(), drain.clone(), builder.clone());
    serve_connection(builder, io, &drain, &broker.refusals, move |mut req| {
        let (b, d, ib) = (b.clone(), d.clone(), inner_builder.clone());
        if let Some(identity) = &identity {
            req.extensions_mut().insert(identity.clone());
        }
        async move { Ok(route(b, ib, d, peer, req).await) }
    })
    .await;
}

async fn route(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    peer: Option<IpAddr>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    // Who is asking is settled before anything else: the CONNECT's (or the request's own) token,
    // or the connection's certificate. No identity, no proxying, not even a passthrough tunnel.
    let identity = match broker.identities.for_request(req.extensions(), req.headers()).await {
        Ok(identity) => ConnectionIdentity(identity),
        Err(e) => {
            let request_id = new_request_id();
            pipeline::audit_identity_refusal(&broker, &request_id, None, &e);
            let e = BrokerError::from(e);
            tracing::warn!(request_id = %request_id, error = %e, code = e.code(), "proxy request refused");
            return e.into_response(&request_id);
        }
    };
    let refuser = Refuser { broker: &broker, listener: LISTENER, peer, agent: Some(&identity.0) };
    if req.method() == Method::CONNECT {
        return connect(&broker, builder, drain, &identity, refuser, req).await;
    }
    if req.uri().scheme().is_none() || req.uri().host().is_none() {
        return refuser.answer(None, BrokerError::NotAProxyRequest);
    }
    req.extensions_mut().insert(identity.clone());
    absolute_form(&broker, refuser, req).await
}

/// `CONNECT host:port`: intercept routed hosts, tunnel passthrough hosts, refuse the rest.
async fn connect(
    broker: &Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    identity: &ConnectionIdentity,
    refuser: Refuser<'_>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((host, port)) = connect_target(&req) else {
        return refuser.answer(None, BrokerError::BadConnectTarget(printable_target(&req)));
    };
    let target = format!("{host}:{port}");
    if let Some(route) = broker.config.route_for_host(&host) {
        let target = Arc::new(Target { scheme: "https", host, port, base_path: String::new(), route: Arc::new(route.clone()) });
        tokio::spawn(budget::carry(intercept::intercept(broker.clone(), builder, drain, target, identity.clone(), hyper::upgrade::on(req))));
        return established();
    }
    let Some(access) = broker.config.passthrough(&host) else {
        return refuser.answer(Some(&target), BrokerError::Unrouted(host));
    };
    // Dialled before the 200, so a refused or unreachable destination is an answer, not a
    // tunnel that closes at once.
    match passthrough::dial(broker, &host, port, access).await {
        Ok(upstream) => {
            tracing::info!(%host, port, "tunnelling passthrough host without credentials");
            // Tracked like upgraded connections: shutdown waits for it within the grace period.
            // A passthrough tunnel holds its connection's budget slot, busy, for its whole life.
            if !broker.tunnels.spawn(budget::carry_busy(passthrough::tunnel(hyper::upgrade::on(req), upstream, host, port, broker.config.limits.idle_timeout)))
            {
                return refuser
                    .answer(Some(&target), BrokerError::Upstream { host: target.clone(), reason: "the broker is shutting down; no new tunnels".into() });
            }
            established()
        }
        Err(e) => refuser.answer(Some(&target), e),
    }
}

async fn absolute_form(broker: &Arc<Broker>, refuser: Refuser<'_>, req: Request<Incoming>) -> Response<Body> {
    let host = req.uri().host().unwrap_or_default().to_ascii_lowercase();
    let https = req.uri().scheme_str() == Some("https");
    let port = req.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
    let target = format!("{host}:{port}");
    if let Some(route) = broker.config.route_for_host(&host) {
        if !https && !route.allow_plaintext_upstream {
            return refuser.answer(Some(&target), BrokerError::PlaintextRefused(host));
        }
        let scheme = if https { "https" } else { "http" };
        let target = Arc::new(Target { scheme, host, port, base_path: String::new(), route: Arc::new(route.clone()) });
        return match pipeline::handle(broker.clone(), target, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
    }
    let Some(access) = broker.config.passthrough(&host) else {
        return refuser.answer(Some(&target), BrokerError::Unrouted(host));
    };
    if https {
        // The broker would have to be the TLS client, which a passthrough host never gets.
        return refuser
            .answer(Some(&target), BrokerError::BadRequest(format!("https:// requests to passthrough host {host} are tunnelled, not forwarded: use CONNECT")));
    }
    match passthrough::forward_plain(broker, req, &host, port, access).await {
        Ok(resp) => resp,
        Err(e) => refuser.answer(Some(&target), e),
    }
}

/// Parse `host:port` from a CONNECT request; both parts are required.
fn connect_target(req: &Request<Incoming>) -> Option<(String, u16)> {
    let authority = req.uri().authority()?;
    let port = authority.port_u16()?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    (!host.is_empty() && port != 0).then_some((host, port))
}

/// A refused CONNECT target as the answer and the audit record show it: without any userinfo
/// (`user:password@`), which is the agent's and may be a secret, and bounded in length.
fn printable_target(req: &Request<Incoming>) -> String {
    let target = match req.uri().authority() {
        Some(a) => a.as_str().rsplit('@').next().unwrap_or_default().to_string(),
        None => req.uri().to_string(),
    };
    target.chars().take(256).collect()
}

fn established() -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::OK;
    resp
}
