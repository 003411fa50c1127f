//! The last stage: inject the credential, forward, and stream the answer back.

use http::{header, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers::{is_upgrade, strip_hop_by_hop};
use super::{BrokerError, Target};
use crate::broker::Broker;
use crate::config::HeaderInject;
use crate::inject::header::inject;
use crate::providers::{Credential, Lease};
use crate::upstream::{boxed, Body};

/// Header routes: put the token into its header and forward.
pub(super) async fn forward(
    broker: &Broker,
    target: &Target,
    mut req: Request<Incoming>,
    path: &str,
    lease: &Lease,
    inject_cfg: &HeaderInject,
) -> Result<Response<Body>, BrokerError> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let query = parts.uri.query().map(str::to_string);
    prepare_head(target, &mut parts, path, query.as_deref(), upgrade)?;
    let Credential::Token(token) = &lease.credential else {
        return Err(BrokerError::Upstream { host: target.host.clone(), reason: "the provider did not mint a token for a header route".into() });
    };
    inject(&mut parts.headers, inject_cfg, token).map_err(|e| BrokerError::Upstream { host: target.host.clone(), reason: e.to_string() })?;
    send(broker, target, Request::from_parts(parts, boxed(body)), client_upgrade).await
}

/// The upstream request head: hop-by-hop headers gone, Host left to the client, URI pointing at
/// the upstream (the endpoint's base path prepended, the query as given).
pub(super) fn prepare_head(target: &Target, parts: &mut http::request::Parts, path: &str, query: Option<&str>, upgrade: bool) -> Result<(), BrokerError> {
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // The client sets Host (HTTP/1.1) or :authority (HTTP/2) from the URI.
    parts.headers.remove(header::HOST);
    parts.uri = upstream_uri(target, path, query)?;
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// Send the finished request and stream the answer back (switching protocols where asked).
pub(super) async fn send(
    broker: &Broker,
    target: &Target,
    request: Request<Body>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, BrokerError> {
    let upgrade = client_upgrade.is_some();
    let timeout = broker.config.limits.request_timeout;
    let client = if upgrade { &broker.upgrade_client } else { &broker.client };
    let mut resp = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| BrokerError::UpstreamTimeout(target.host.clone()))?
        .map_err(|e| BrokerError::Upstream { host: target.host.clone(), reason: crate::providers::redact::error_chain(&e) })?;

    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // Only an upgrade the policy allowed may become a tunnel; an upstream switching
        // protocols unasked would leave the client and the broker disagreeing about the stream.
        let Some(client_upgrade) = client_upgrade else {
            return Err(BrokerError::Upstream { host: target.host.clone(), reason: "switched protocols (101) without being asked to".into() });
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        // Tracked, so shutdown waits for it within the grace period and then closes it.
        // Closed when nothing moves either way for limits.idle_timeout, like a CONNECT tunnel.
        let idle = broker.config.limits.idle_timeout;
        // It keeps the agent connection's budget slot (busy) for as long as it is open.
        let tracked = broker.tunnels.spawn(crate::listener::budget::carry_busy(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let end = crate::listener::tunnel::copy_bidirectional_idle(TokioIo::new(client), TokioIo::new(upstream), idle).await;
                    tracing::debug!(?end, "upgraded connection ended");
                }
                Err(e) => tracing::warn!(error = %e, "protocol upgrade failed"),
            }
        }));
        if !tracked {
            return Err(BrokerError::Upstream { host: target.host.clone(), reason: "the broker is shutting down; no new upgraded connections".into() });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, boxed(http_body_util::Empty::new())));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, boxed(body)))
}

fn upstream_uri(target: &Target, path: &str, query: Option<&str>) -> Result<Uri, BrokerError> {
    let default_port = if target.scheme == "https" { 443 } else { 80 };
    let authority = if target.port == default_port { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
    // A loopback emulator behind `connect_to: http://…` is dialled in cleartext; the authority
    // (and so the Host header and any signature over it) stays what the client addressed.
    let scheme = if target.route.connect_plaintext { "http" } else { target.scheme };
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| BrokerError::BadRequest(format!("cannot build upstream URI: {e}")))
}
