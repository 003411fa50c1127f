//! The transparent listener: connections that iptables REDIRECTed here (`credential-broker
//! iptables-init`), so agents need no proxy settings. The original destination comes from
//! `SO_ORIGINAL_DST`; the first bytes say what the agent speaks and to whom:
//!
//! - TLS: the ClientHello's server name decides, exactly like `CONNECT host:port` on the forward
//!   proxy: routed hosts are intercepted, passthrough hosts tunnelled, everything else refused.
//! - HTTP: the `Host` header decides; routed hosts get the forward proxy's cleartext refusal
//!   unless the route allows plaintext upstreams.
//! - Postgres (an `SSLRequest`, `GSSENCRequest`, `CancelRequest` or protocol 3.0
//!   `StartupMessage`): served by the session handler of the configured database whose `upstream`
//!   is the original destination, exactly as on that database's own listener (no password, a user
//!   minted per session, every statement checked). No such database: closed, never spliced.
//! - anything else: closed (default deny).
//!
//! The bytes read to decide are replayed ([`Rewind`]), so the TLS acceptor or the upstream sees the
//! connection from its first byte. Passthrough tunnels dial the *named* host, not the original
//! address, so an agent cannot reach an arbitrary address by claiming an allowed name, and the
//! named host's addresses pass the same checks as a CONNECT's ([`super::passthrough`]).
//!
//! Every refusal is audited ([`Refuser`]): a refused TLS connection gets an `access_denied`
//! alert, a refused HTTP request a JSON answer carrying the audit record's request id.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::refuse::Refuser;
use super::rewind::Rewind;
use super::sni::{parse_client_hello, starts_like_tls, ClientHello};
use super::tunnel::copy_bidirectional_idle;
use super::{intercept, passthrough, serve_connection, Drain};
use crate::broker::Broker;
use crate::pipeline::{self, BrokerError, Target};
use crate::postgres::{session, wire, CancelKeys, DatabaseListener};
use crate::upstream::Body;

/// The most a ClientHello may take before the connection is given up on (several records).
const MAX_CLIENT_HELLO_BYTES: usize = 64 * 1024;

/// A fatal TLS alert `access_denied`, sent in the clear before any handshake: what an unrouted
/// server name gets, so the agent's TLS library reports a refusal rather than a reset.
const TLS_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// Why a redirected connection is closed without being handled.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("no original destination (not redirected by iptables?): {0}")]
    NoOriginalDestination(io::Error),
    #[error("connection addressed to the transparent listener itself; only iptables-redirected traffic is handled")]
    AddressedToSelf,
    #[error("no TLS ClientHello or HTTP request within the header timeout")]
    Timeout,
    #[error("reading the first bytes failed: {0}")]
    Read(io::Error),
    #[error("connection closed before a ClientHello or HTTP request")]
    Closed,
    #[error("malformed TLS ClientHello: {0}")]
    MalformedHello(&'static str),
    #[error("TLS ClientHello without a server name; cannot tell which host is meant")]
    NoServerName,
    #[error("malformed or oversized HTTP request head")]
    MalformedHttp,
    #[error("HTTP request without a Host header")]
    NoHost,
    #[error("neither TLS nor HTTP nor Postgres; not handled in transparent mode")]
    UnknownProtocol,
}

impl Rejected {
    /// The refusal code of an audited rejection; None for connections that merely ended.
    fn code(&self) -> Option<&'static str> {
        match self {
            Rejected::NoOriginalDestination(_) | Rejected::AddressedToSelf => Some("not_redirected"),
            Rejected::Timeout => Some("sniff_timeout"),
            Rejected::Read(_) | Rejected::Closed => None,
            Rejected::MalformedHello(_) => Some("malformed_client_hello"),
            Rejected::NoServerName => Some("no_server_name"),
            Rejected::MalformedHttp => Some("malformed_http_request"),
            Rejected::NoHost => Some("no_host_header"),
            Rejected::UnknownProtocol => Some("unknown_protocol"),
        }
    }
}

/// The listener name in refusal records.
const LISTENER: &str = "transparent";

/// What the first bytes of a redirected connection are.
enum Sniffed {
    Tls { server_name: String },
    Http { host: String },
    Postgres,
}

/// A configured database the transparent listener can serve: connections whose original
/// destination is its `upstream` go to its session handler, sharing its listener's cancel keys.
#[derive(Clone)]
pub struct PostgresTarget {
    pub db: Arc<DatabaseListener>,
    pub keys: CancelKeys,
}

/// What the first bytes say about Postgres: each of the startup packets begins with an i32 length
/// and an i32 code.
#[derive(Debug, PartialEq, Eq)]
enum PostgresStart {
    Yes,
    No,
    /// Fewer than 8 bytes yet, and they could still be a startup packet.
    Incomplete,
}

fn postgres_start(head: &[u8]) -> PostgresStart {
    // A startup packet's length is big-endian and below 10 000, so it starts with two zero bytes;
    // TLS starts with 0x16 and HTTP with a letter.
    if head.iter().take(2).any(|b| *b != 0) {
        return PostgresStart::No;
    }
    let Some(first) = head.get(..8) else { return PostgresStart::Incomplete };
    let len = i32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    let code = i32::from_be_bytes([first[4], first[5], first[6], first[7]]);
    let ok = match code {
        wire::SSL_REQUEST | wire::GSSENC_REQUEST => len == 8,
        wire::CANCEL_REQUEST => len == 16,
        // The header and at least the list's terminating zero; the same upper bound as the session handler.
        wire::PROTOCOL_3_0 => (9..=10_000).contains(&len),
        _ => false,
    };
    if ok {
        PostgresStart::Yes
    } else {
        PostgresStart::No
    }
}

/// The destination the agent dialled before iptables redirected the connection here.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = if stream.local_addr()?.is_ipv4() { sock.original_dst_v4()? } else { sock.original_dst_v6()? };
    addr.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "SO_ORIGINAL_DST is not an IP address"))
}

/// Serve one redirected agent connection.
pub async fn serve(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    databases: Arc<[PostgresTarget]>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let refuser = Refuser { broker: &broker, listener: LISTENER, peer: Some(peer.ip()), agent: None };
    let original = match destination(&stream) {
        Ok(a) => a,
        Err(e) => return reject(&refuser, None, &e),
    };
    let timeout = broker.config.limits.header_read_timeout;
    let mut head = BytesMut::with_capacity(4096);
    let sniffed = match tokio::time::timeout(timeout, sniff(&mut stream, &mut head, broker.config.limits.max_header_bytes)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return reject(&refuser, Some(original), &e),
        Err(_) => return reject(&refuser, Some(original), &Rejected::Timeout),
    };
    let io = Rewind::new(head.freeze(), stream);
    match sniffed {
        Sniffed::Tls { server_name } => tls(broker.clone(), builder, drain, io, original, peer, server_name).await,
        Sniffed::Http { host } => http(broker.clone(), builder, drain, io, original, peer, host).await,
        Sniffed::Postgres => postgres(broker.clone(), &databases, io, original, peer).await,
    }
}

/// Audit a connection closed before it was handled (or just log one that ended by itself).
fn reject(refuser: &Refuser<'_>, original: Option<SocketAddr>, e: &Rejected) {
    let target = original.map(|a| a.to_string());
    match e.code() {
        Some(code) => {
            refuser.record(code, target.as_deref(), &e.to_string());
        }
        None => tracing::debug!(peer = ?refuser.peer, ?original, error = %e, "transparent connection ended before it could be handled"),
    }
}

/// The original destination, refusing connections that were not redirected: without a REDIRECT,
/// `SO_ORIGINAL_DST` is the listener's own address, and handling those would let anything on the
/// host use the broker as an open relay keyed only by SNI.
fn destination(stream: &TcpStream) -> Result<SocketAddr, Rejected> {
    let original = original_destination(stream).map_err(Rejected::NoOriginalDestination)?;
    if stream.local_addr().is_ok_and(|local| local == original) {
        return Err(Rejected::AddressedToSelf);
    }
    Ok(original)
}

/// Read just enough to know the protocol and the host: a whole ClientHello, or an HTTP head.
async fn sniff(stream: &mut TcpStream, head: &mut BytesMut, max_header_bytes: usize) -> Result<Sniffed, Rejected> {
    loop {
        if stream.read_buf(head).await.map_err(Rejected::Read)? == 0 {
            return Err(Rejected::Closed);
        }
        match postgres_start(head) {
            PostgresStart::Yes => return Ok(Sniffed::Postgres),
            PostgresStart::Incomplete => continue,
            PostgresStart::No => {}
        }
        if starts_like_tls(head) {
            match parse_client_hello(head) {
                ClientHello::Complete { server_name: Some(server_name) } => return Ok(Sniffed::Tls { server_name }),
                ClientHello::Complete { server_name: None } => return Err(Rejected::NoServerName),
                ClientHello::Malformed(why) => return Err(Rejected::MalformedHello(why)),
                ClientHello::NotTls => return Err(Rejected::UnknownProtocol),
                ClientHello::Incomplete if head.len() > MAX_CLIENT_HELLO_BYTES => return Err(Rejected::MalformedHello("too long")),
                ClientHello::Incomplete => continue,
            }
        }
        if !looks_like_http(head) {
            return Err(Rejected::UnknownProtocol);
        }
        match http_host(head) {
            Ok(Some(host)) => return Ok(Sniffed::Http { host }),
            Ok(None) if head.len() > max_header_bytes => return Err(Rejected::MalformedHttp),
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// An HTTP/1 request line starts with an upper-case method token and a space.
fn looks_like_http(head: &[u8]) -> bool {
    let token = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    token > 0 && (token == head.len() || head[token] == b' ')
}

/// The lowercased `Host` (without port) of a complete request head; `Ok(None)` while incomplete.
fn http_host(head: &[u8]) -> Result<Option<String>, Rejected> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Rejected::MalformedHttp),
        Ok(httparse::Status::Complete(_)) => {
            let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).ok_or(Rejected::NoHost)?;
            let host = std::str::from_utf8(host.value).map_err(|_| Rejected::MalformedHttp)?;
            Ok(Some(host_without_port(host)))
        }
    }
}

fn host_without_port(host: &str) -> String {
    let host = host.trim();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

async fn tls(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    mut io: Rewind<TcpStream>,
    original: SocketAddr,
    peer: SocketAddr,
    host: String,
) {
    if let Some(route) = broker.config.route_for_host(&host) {
        tracing::debug!(%host, %original, route = %route.name, "transparent TLS: intercepting");
        let target = Arc::new(Target { scheme: "https", host, port: original.port(), base_path: String::new(), route: Arc::new(route.clone()) });
        return intercept::intercept_stream(broker, builder, drain, target, io).await;
    }
    let port = original.port();
    let target = format!("{host}:{port}");
    let refuser = Refuser { broker: &broker, listener: LISTENER, peer: Some(peer.ip()), agent: None };
    let refused = match broker.config.passthrough(&host) {
        None => BrokerError::Unrouted(host.clone()),
        Some(access) => match passthrough::dial(&broker, &host, port, access).await {
            Ok(upstream) => return splice(&broker, io, upstream, host, port).await,
            Err(e) => e,
        },
    };
    if refused.is_refusal() {
        refuser.record(refused.code(), Some(&target), &refused.to_string());
        let _ = io.write_all(&TLS_ACCESS_DENIED).await;
    } else {
        tracing::warn!(%target, peer = %peer.ip(), error = %refused, "transparent passthrough failed");
    }
    let _ = io.shutdown().await;
}

async fn http(
    broker: Arc<Broker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    io: Rewind<TcpStream>,
    original: SocketAddr,
    peer: SocketAddr,
    host: String,
) {
    let port = original.port();
    if let Some(access) = broker.config.passthrough(&host).filter(|_| broker.config.route_for_host(&host).is_none()) {
        let failure = match passthrough::dial(&broker, &host, port, access).await {
            Ok(upstream) => return splice(&broker, io, upstream, host, port).await,
            Err(e) => e,
        };
        // Each request on the connection gets the answer (and, for a refusal, its audit record).
        let target = format!("{host}:{port}");
        return serve_connection(builder, io, &drain, &broker.refusals.clone(), move |_req| {
            let (broker, target, failure) = (broker.clone(), target.clone(), failure.clone());
            async move { Ok(Refuser { broker: &broker, listener: LISTENER, peer: Some(peer.ip()), agent: None }.answer(Some(&target), failure)) }
        })
        .await;
    }
    serve_connection(builder, io, &drain, &broker.refusals.clone(), move |req| {
        let broker = broker.clone();
        async move { Ok(cleartext_request(broker, port, peer, req).await) }
    })
    .await;
}

/// One cleartext request: the same decisions as the forward proxy's absolute-form requests.
async fn cleartext_request(broker: Arc<Broker>, port: u16, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let refuser = Refuser { broker: &broker, listener: LISTENER, peer: Some(peer.ip()), agent: None };
    let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(host_without_port).unwrap_or_default();
    let target = format!("{host}:{port}");
    let Some(route) = broker.config.route_for_host(&host) else {
        return refuser.answer(Some(&target), BrokerError::Unrouted(host));
    };
    if !route.allow_plaintext_upstream {
        return refuser.answer(Some(&target), BrokerError::PlaintextRefused(host));
    }
    let target = Arc::new(Target { scheme: "http", host, port, base_path: String::new(), route: Arc::new(route.clone()) });
    match pipeline::handle(broker.clone(), target, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// A Postgres connection goes to the database configured for its original destination, or nowhere.
async fn postgres(broker: Arc<Broker>, databases: &[PostgresTarget], io: Rewind<TcpStream>, original: SocketAddr, peer: SocketAddr) {
    for target in databases {
        let matches = match tokio::net::lookup_host(target.db.upstream.as_str()).await {
            Ok(mut addrs) => addrs.any(|a| a == original),
            Err(e) => {
                tracing::warn!(database = %target.db.name, upstream = %target.db.upstream, error = %e, "resolving a database upstream failed");
                false
            }
        };
        if matches {
            tracing::debug!(%peer, %original, database = %target.db.name, "transparent Postgres: serving");
            return session::serve(broker, target.db.clone(), target.keys.clone(), io).await;
        }
    }
    let refuser = Refuser { broker: &broker, listener: LISTENER, peer: Some(peer.ip()), agent: None };
    refuser.record(
        "no_database",
        Some(&original.to_string()),
        "Postgres connection refused: no configured database has this upstream address; closed, never spliced",
    );
}

/// Copy bytes both ways to an explicitly allowed host (already dialled at a checked address),
/// with no interception and no credentials, until either side closes or nothing moves for
/// `limits.idle_timeout`.
/// Tracked like upgraded connections: shutdown waits for it within the grace period.
async fn splice(broker: &Broker, io: Rewind<TcpStream>, upstream: TcpStream, host: String, port: u16) {
    tracing::info!(%host, port, "transparent: tunnelling passthrough host without credentials");
    let idle = broker.config.limits.idle_timeout;
    // Holds the connection's budget slot, busy, for its whole life, like a CONNECT tunnel.
    broker.tunnels.spawn(super::budget::carry_busy(async move { passthrough::log_end(&host, port, copy_bidirectional_idle(io, upstream, idle).await) }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real first packets, as psql (libpq) sends them.
    #[test]
    fn postgres_startup_packets_are_recognised() {
        // SSLRequest (sslmode=prefer/require): length 8, code 80877103.
        assert_eq!(postgres_start(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), PostgresStart::Yes);
        // GSSENCRequest (gssencmode=prefer): length 8, code 80877104.
        assert_eq!(postgres_start(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]), PostgresStart::Yes);
        // CancelRequest: length 16, code 80877102, then process id and secret key.
        assert_eq!(postgres_start(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 1, 2, 3, 4]), PostgresStart::Yes);
        // StartupMessage protocol 3.0 for `psql -U agent -d app`.
        let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0agent\0database\0app\0application_name\0psql\0\0");
        let len = startup.len() as u32;
        startup[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(postgres_start(&startup), PostgresStart::Yes);
        // Partial: wait for 8 bytes.
        assert_eq!(postgres_start(&[]), PostgresStart::Incomplete);
        assert_eq!(postgres_start(&[0, 0, 0, 8, 0x04]), PostgresStart::Incomplete);
        // Not Postgres: TLS, HTTP, protocol 2.0, wrong lengths, garbage.
        assert_eq!(postgres_start(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]), PostgresStart::No);
        assert_eq!(postgres_start(b"GET / HTTP/1.1\r\n"), PostgresStart::No);
        assert_eq!(postgres_start(&[0, 0, 1, 40, 0, 2, 0, 0]), PostgresStart::No);
        assert_eq!(postgres_start(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2f]), PostgresStart::No);
        assert_eq!(postgres_start(&[0, 0, 0, 4, 0, 3, 0, 0]), PostgresStart::No);
        assert_eq!(postgres_start(&[0, 0, 0, 0, 0, 0, 0, 0]), PostgresStart::No);
        assert_eq!(postgres_start(&[0, 1, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), PostgresStart::No);
    }

    #[test]
    fn hosts_lose_ports_and_case() {
        assert_eq!(host_without_port("API.GitHub.test:8080"), "api.github.test");
        assert_eq!(host_without_port("api.github.test."), "api.github.test");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("example.com"), "example.com");
    }

    #[test]
    fn http_heads_are_recognised_and_read_to_the_host() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"PO"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(&[0, 0, 0, 8, 4, 210, 22, 47]));
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\nHost: a.test"), Ok(None)));
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\nHost: A.test:80\r\n\r\n"), Ok(Some(h)) if h == "a.test"));
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), Err(Rejected::NoHost)));
    }
}
