//! Passthrough hosts: tunnelled opaquely (CONNECT, transparent splices) or forwarded as cleartext
//! HTTP (absolute-form), never intercepted and never given a credential.
//!
//! The destination is resolved once, every resolved address is checked ([`destination`]), and
//! the connection goes to exactly a checked address: nothing resolves the name a second time,
//! so a DNS answer that changes between check and use (rebinding) cannot slip past the check.

pub mod destination;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tunnel::{copy_bidirectional_idle, TunnelEnd};
use crate::broker::Broker;
use crate::config::PassthroughAccess;
use crate::pipeline::headers::strip_hop_by_hop;
use crate::pipeline::BrokerError;
use crate::upstream::{boxed, Body};
pub use destination::OwnListeners;

/// Resolve `host`, check every address it resolves to, and connect to a checked one, all within
/// `limits.connect_timeout`. A refused destination is [`BrokerError::PassthroughRefused`]; a
/// name that does not resolve or a destination that does not answer is an upstream error.
pub async fn dial(broker: &Broker, host: &str, port: u16, access: PassthroughAccess) -> Result<TcpStream, BrokerError> {
    let timeout = broker.config.limits.connect_timeout;
    let upstream = |reason: String| BrokerError::Upstream { host: host.to_string(), reason };
    let addresses = match tokio::time::timeout(timeout, resolve(host, port)).await {
        Ok(Ok(addresses)) => addresses,
        Ok(Err(e)) => return Err(upstream(format!("cannot resolve {host}: {e}"))),
        Err(_) => return Err(BrokerError::UpstreamTimeout(host.to_string())),
    };
    // Every address is checked, not just the one dialled: a name whose answer mixes a public and
    // an internal address is refused as a whole.
    for addr in &addresses {
        if let Err(why) = destination::check(*addr, access.allow_internal_addresses, &broker.own_listeners) {
            return Err(BrokerError::PassthroughRefused { host: host.to_string(), reason: refusal_reason(host, port, *addr, why) });
        }
    }
    match tokio::time::timeout(timeout, connect_first(&addresses)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(upstream(format!("cannot connect to {host}:{port}: {e}"))),
        Err(_) => Err(BrokerError::UpstreamTimeout(host.to_string())),
    }
}

fn refusal_reason(host: &str, port: u16, addr: SocketAddr, why: destination::Forbidden) -> String {
    let what =
        if host.parse::<IpAddr>().is_ok() { format!("{addr} is {}", why.describe()) } else { format!("{host}:{port} resolves to {addr}, {}", why.describe()) };
    if why.lifted_by_opt_in() {
        format!("{what}; an operator can allow it with allow_internal_addresses on this host's passthrough_hosts entry")
    } else {
        format!("{what}, never reachable through a tunnel")
    }
}

/// An IP literal is its own address; a name is looked up once.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addresses.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
    }
    Ok(addresses)
}

async fn connect_first(addresses: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addresses {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copy bytes both ways between an accepted CONNECT and its already-dialled destination, until
/// either side closes or nothing moves for `idle`.
pub async fn tunnel(upgrade: OnUpgrade, upstream: TcpStream, host: String, port: u16, idle: Duration) {
    let upgraded = match upgrade.await {
        Ok(u) => u,
        Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
    };
    log_end(&host, port, copy_bidirectional_idle(TokioIo::new(upgraded), upstream, idle).await);
}

/// Log how a passthrough tunnel ended (debug: the tunnel carried nothing the broker vouches for).
pub fn log_end(host: &str, port: u16, end: TunnelEnd) {
    match end {
        TunnelEnd::Closed { a_to_b, b_to_a } => {
            tracing::debug!(%host, port, agent_to_upstream = a_to_b, upstream_to_agent = b_to_a, "passthrough tunnel closed")
        }
        TunnelEnd::Idle => tracing::debug!(%host, port, "passthrough tunnel idle for limits.idle_timeout_ms; closed"),
        TunnelEnd::Failed(e) => tracing::debug!(%host, port, error = %e, "passthrough tunnel failed"),
    }
}

/// Forward one absolute-form `http://` request to a passthrough host without credentials, over
/// a connection dialled to the checked address (never a pooled client that resolves again).
pub async fn forward_plain(broker: &Broker, req: Request<Incoming>, host: &str, port: u16, access: PassthroughAccess) -> Result<Response<Body>, BrokerError> {
    let upstream_error = |e: hyper::Error| BrokerError::Upstream { host: host.to_string(), reason: crate::providers::redact::error_chain(&e) };
    let stream = dial(broker, host, port, access).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(upstream_error)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "passthrough upstream connection ended with an error");
        }
    });
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // Origin-form to the origin, and a Host that names what was checked, whatever the agent's
    // own Host header said.
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = path.parse::<Uri>().map_err(|e| BrokerError::BadRequest(format!("cannot build the upstream request target: {e}")))?;
    let authority = if port == 80 { host.to_string() } else { format!("{host}:{port}") };
    let authority = HeaderValue::from_str(&authority).map_err(|e| BrokerError::BadRequest(format!("cannot build the Host header: {e}")))?;
    parts.headers.insert(header::HOST, authority);
    parts.version = http::Version::HTTP_11;
    let resp = tokio::time::timeout(broker.config.limits.request_timeout, sender.send_request(Request::from_parts(parts, boxed(body))))
        .await
        .map_err(|_| BrokerError::UpstreamTimeout(host.to_string()))?
        .map_err(upstream_error)?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, boxed(body)))
}
