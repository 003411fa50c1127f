//! The forward proxy (`HTTP_PROXY` / `HTTPS_PROXY`): absolute-form requests and `CONNECT`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{budget, intercept, serve_connection, Drain};
use crate::broker::Broker;
use crate::identity::ConnectionIdentity;
use crate::pipeline::upstream::forward_plain;
use crate::pipeline::{self, new_request_id, BrokerError, Target};
use crate::upstream::{full, Body};

/// Serve one agent connection to the proxy port. With `identity.mode: mtls` the port speaks TLS
/// and the client certificate names the agent for every request on the connection.
pub async fn serve(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, stream: TcpStream) {
    let Some(mtls) = broker.identities.mtls() else {
        return serve_io(broker, builder, drain, stream, None).await;
    };
    let peer = stream.peer_addr().ok();
    match mtls.accept(stream, broker.config.limits.header_read_timeout).await {
        Ok((tls, agent)) => {
            let identity = ConnectionIdentity(broker.identities.for_certificate(agent));
            tracing::debug!(?peer, agent_id = %identity.0.agent_id, tenant = %identity.0.tenant, "agent connected with a client certificate");
            serve_io(broker, builder, drain, tls, Some(identity)).await
        }
        Err(reason) => tracing::warn!(?peer, %reason, "refused a proxy connection without a valid client certificate"),
    }
}

async fn serve_io<I>(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, io: I, identity: Option<ConnectionIdentity>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (b, d, inner_builder) = (broker.clone(), drain.clone(), builder.clone());
    serve_connection(builder, io, &drain, &broker.refusals, move |mut req| {
        let (b, d, ib) = (b.clone(), d.clone(), inner_builder.clone());
        if let Some(identity) = &identity {
            req.extensions_mut().insert(identity.clone());
        }
        async move { Ok(route(b, ib, d, req).await) }
    })
    .await;
}

async fn route(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, mut req: Request<Incoming>) -> Response<Body> {
    // Who is asking is settled before anything else: the CONNECT's (or the request's own) token,
    // or the connection's certificate. No identity, no proxying, not even a passthrough tunnel.
    let identity = match broker.identities.for_request(req.extensions(), req.headers()).await {
        Ok(identity) => ConnectionIdentity(identity),
        Err(e) => {
            let request_id = new_request_id();
            pipeline::audit_identity_refusal(&broker, &request_id, None, &e);
            return refuse_as(e.into(), &request_id);
        }
    };
    if req.method() == Method::CONNECT {
        return connect(broker, builder, drain, identity, req).await;
    }
    if req.uri().scheme().is_none() || req.uri().host().is_none() {
        return refuse(BrokerError::NotAProxyRequest);
    }
    req.extensions_mut().insert(identity);
    absolute_form(broker, req).await
}

/// `CONNECT host:port`: intercept routed hosts, tunnel passthrough hosts, refuse the rest.
async fn connect(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    identity: ConnectionIdentity,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((host, port)) = connect_target(&req) else {
        return refuse(BrokerError::BadConnectTarget(req.uri().to_string()));
    };
    if let Some(route) = broker.config.route_for_host(&host) {
        let target = Arc::new(Target { scheme: "https", host, port, base_path: String::new(), route: Arc::new(route.clone()) });
        tokio::spawn(budget::carry(intercept::intercept(broker.clone(), builder, drain, target, identity, hyper::upgrade::on(req))));
        return established();
    }
    if broker.config.is_passthrough(&host) {
        tracing::info!(%host, port, "tunnelling passthrough host without credentials");
        tokio::spawn(budget::carry_busy(intercept::tunnel(host, port, hyper::upgrade::on(req))));
        return established();
    }
    refuse(BrokerError::Unrouted(host))
}

async fn absolute_form(broker: Arc<Broker>, req: Request<Incoming>) -> Response<Body> {
    let host = req.uri().host().unwrap_or_default().to_ascii_lowercase();
    let https = req.uri().scheme_str() == Some("https");
    let port = req.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
    if let Some(route) = broker.config.route_for_host(&host) {
        if !https && !route.allow_plaintext_upstream {
            return refuse(BrokerError::PlaintextRefused(host));
        }
        let scheme = if https { "https" } else { "http" };
        let target = Arc::new(Target { scheme, host, port, base_path: String::new(), route: Arc::new(route.clone()) });
        return match pipeline::handle(broker, target, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
    }
    if broker.config.is_passthrough(&host) {
        return match forward_plain(&broker.client, req, broker.config.limits.request_timeout).await {
            Ok(resp) => resp,
            Err(e) => refuse(e),
        };
    }
    refuse(BrokerError::Unrouted(host))
}

/// Parse `host:port` from a CONNECT request; both parts are required.
fn connect_target(req: &Request<Incoming>) -> Option<(String, u16)> {
    let authority = req.uri().authority()?;
    let port = authority.port_u16()?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    (!host.is_empty() && port != 0).then_some((host, port))
}

fn established() -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::OK;
    resp
}

fn refuse(e: BrokerError) -> Response<Body> {
    refuse_as(e, &new_request_id())
}

fn refuse_as(e: BrokerError, request_id: &str) -> Response<Body> {
    tracing::warn!(request_id = %request_id, error = %e, code = e.code(), "proxy request refused");
    e.into_response(request_id)
}
