//! The upstream side: connect to the server (TLS per the database's `sslmode`) and log in as the
//! minted user (SCRAM-SHA-256, md5 or cleartext, as the server asks), up to `AuthenticationOk`.
//! With `sslmode: require` the server is not authenticated, so only SCRAM-SHA-256-PLUS (channel
//! binding to the certificate the broker saw) is used: a man in the middle then learns nothing it
//! could log in with, nor relay.

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{self, UpstreamStream};
use super::wire::{self, error_fields, read_message};
use super::DatabaseListener;
use crate::config::SslMode;
use crate::providers::Secret;

/// Bound on the TCP connection, the `SSLRequest` and the TLS handshake together (cancel requests).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bound on a whole login: TCP, `SSLRequest`, TLS, startup packet and authentication up to the
/// server's `AuthenticationOk`. A server that takes the connection (and the TLS handshake) but
/// never answers the startup packet must not hold the session and its minted user.
pub const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a login under `sslmode: require` is refused when the server does not use channel binding.
const REQUIRE_NEEDS_BINDING: &str = "sslmode require does not authenticate the server, so the broker only logs in with SCRAM-SHA-256-PLUS channel binding; use verify-full or have the server authenticate this user with scram-sha-256 over TLS (a certificate signed with RSA-SHA256/384/512 or ECDSA)";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the database at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the database at {addr} does not offer TLS but sslmode is {sslmode}; refusing to continue in cleartext")]
    NoTls { addr: String, sslmode: SslMode },
    #[error("TLS with the database at {addr} (sslmode {sslmode}) failed: {message}")]
    Tls { addr: String, sslmode: SslMode, message: String },
    #[error("connecting to the database at {addr}: no connection (and TLS session) within {after:?}")]
    Timeout { addr: String, after: std::time::Duration },
    #[error("logging in to the database at {addr}: no AuthenticationOk within {after:?} (connection, TLS and authentication)")]
    LoginTimeout { addr: String, after: std::time::Duration },
    #[error("sslmode {sslmode} but no TLS settings for the database at {addr}; refusing to continue in cleartext")]
    NoTlsConfig { addr: String, sslmode: SslMode },
    #[error("the database at {addr} asked for {asked}, but {REQUIRE_NEEDS_BINDING}")]
    UnboundLogin { addr: String, asked: String },
    #[error("the database refused the login: {0}")]
    Refused(String),
    #[error("the database asked for an authentication method the broker does not speak ({0})")]
    UnsupportedAuth(String),
    #[error("talking to the database: {0}")]
    Wire(#[from] wire::WireError),
}

/// A connection to `db`'s server, ready for a startup packet: cleartext for `sslmode: disable`,
/// else `SSLRequest`, the server's `S` and a TLS handshake (checked as `sslmode` says). A server
/// that answers `N` is refused: never a fallback to cleartext.
pub async fn connect(db: &DatabaseListener) -> Result<UpstreamStream, UpstreamError> {
    // A server (or something in between) that takes the connection but never answers must not
    // hold the agent's session open forever.
    tokio::time::timeout(CONNECT_TIMEOUT, connect_unbounded(db))
        .await
        .map_err(|_| UpstreamError::Timeout { addr: db.upstream.clone(), after: CONNECT_TIMEOUT })?
}

async fn connect_unbounded(db: &DatabaseListener) -> Result<UpstreamStream, UpstreamError> {
    let addr = db.upstream.as_str();
    let mut stream = TcpStream::connect(addr).await.map_err(|source| UpstreamError::Connect { addr: addr.into(), source })?;
    let _ = stream.set_nodelay(true);
    let sslmode = db.tls.sslmode;
    // Fail closed: only `disable` means cleartext; any other mode without TLS settings is a bug,
    // never a reason to send the login in the clear.
    let config = match (sslmode, db.tls.client.clone()) {
        (SslMode::Disable, _) => return Ok(UpstreamStream::Plain(stream)),
        (SslMode::Require | SslMode::VerifyFull, Some(config)) => config,
        (SslMode::Require | SslMode::VerifyFull, None) => return Err(UpstreamError::NoTlsConfig { addr: addr.into(), sslmode }),
    };
    let tls_error = |message: String| UpstreamError::Tls { addr: addr.into(), sslmode, message };
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&wire::SSL_REQUEST.to_be_bytes());
    stream.write_all(&request).await.map_err(wire::WireError::from)?;
    // Exactly one byte, unbuffered: anything the server (or a man in the middle) sends after the
    // `S` must go into the TLS handshake, never be read as if it came over TLS.
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(|e| tls_error(format!("no answer to the SSLRequest: {e}")))?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(UpstreamError::NoTls { addr: addr.into(), sslmode }),
        other => return Err(tls_error(format!("unexpected answer {:?} to the SSLRequest", other as char))),
    }
    let name = tls::server_name(&db.upstream_host).map_err(|e| tls_error(format!("{:?} is not a server name: {e}", db.upstream_host)))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| tls_error(e.to_string()))?;
    Ok(UpstreamStream::Tls(Box::new(tls)))
}

/// A logged-in upstream connection; the server's `ParameterStatus`, `BackendKeyData` and
/// `ReadyForQuery` follow on the stream.
/// The whole login, connection included, is bounded by [`LOGIN_TIMEOUT`].
pub async fn login(db: &DatabaseListener, user: &str, password: &Secret, startup: &[(String, String)]) -> Result<UpstreamStream, UpstreamError> {
    tokio::time::timeout(LOGIN_TIMEOUT, login_unbounded(db, user, password, startup))
        .await
        .map_err(|_| UpstreamError::LoginTimeout { addr: db.upstream.clone(), after: LOGIN_TIMEOUT })?
}

async fn login_unbounded(db: &DatabaseListener, user: &str, password: &Secret, startup: &[(String, String)]) -> Result<UpstreamStream, UpstreamError> {
    let mut stream = connect_unbounded(db).await?;
    // With `require` any certificate was accepted: whoever answered may be a man in the middle.
    // Then only SCRAM-SHA-256-PLUS bound to the certificate we saw: cleartext or md5 would hand
    // it the password (or a replayable hash), plain SCRAM could be relayed to the real server.
    let server_unauthenticated = stream.is_tls() && db.tls.sslmode == SslMode::Require;
    let unbound = |asked: &str| UpstreamError::UnboundLogin { addr: db.upstream.clone(), asked: asked.into() };
    let mut buf = BytesMut::new();
    let params: Vec<(&str, &str)> = std::iter::once(("user", user)).chain(startup.iter().map(|(k, v)| (k.as_str(), v.as_str()))).collect();
    frontend::startup_message(params, &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
    stream.write_all(&buf).await.map_err(wire::WireError::from)?;
    let mut scram: Option<ScramSha256> = None;
    // Set once the server's SCRAM signature (AuthenticationSaslFinal) has been verified.
    let mut scram_verified = false;
    loop {
        let message = read_message(&mut stream).await?;
        if message.tag == b'E' {
            let text = error_fields(message.body()).into_iter().filter(|(f, _)| *f == b'M' || *f == b'C').map(|(_, v)| v).collect::<Vec<_>>().join(" ");
            return Err(UpstreamError::Refused(text));
        }
        let mut raw = message.raw;
        let parsed = Backend::parse(&mut raw).map_err(|e| UpstreamError::Refused(format!("bad authentication message: {e}")))?;
        buf.clear();
        match parsed {
            Some(Backend::AuthenticationOk) => {
                // A server that skips proving it knows the password (no verified SaslFinal) is
                // not the server the user was made on.
                if scram.is_some() && !scram_verified {
                    return Err(UpstreamError::Refused("the server ended SCRAM authentication without proving it knows the password (AuthenticationOk before a verified AuthenticationSASLFinal)".into()));
                }
                return Ok(stream);
            }
            Some(Backend::AuthenticationCleartextPassword | Backend::AuthenticationMd5Password(_)) if scram.is_some() => {
                return Err(UpstreamError::Refused("the server switched from SCRAM to a password request during login".into()))
            }
            Some(Backend::AuthenticationCleartextPassword) if server_unauthenticated => return Err(unbound("a cleartext password")),
            Some(Backend::AuthenticationMd5Password(_)) if server_unauthenticated => return Err(unbound("an md5 password")),
            Some(Backend::AuthenticationCleartextPassword) => {
                frontend::password_message(password.expose().as_bytes(), &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
            }
            Some(Backend::AuthenticationMd5Password(body)) => {
                let hashed = postgres_protocol::authentication::md5_hash(user.as_bytes(), password.expose().as_bytes(), body.salt());
                frontend::password_message(hashed.as_bytes(), &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
            }
            Some(Backend::AuthenticationSasl(body)) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = Vec::new();
                while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechanisms).map_err(|e| UpstreamError::Refused(e.to_string()))? {
                    offered.push(m.to_string());
                }
                if scram.is_some() {
                    return Err(UpstreamError::Refused("a second SASL start during login".into()));
                }
                // Over TLS, SCRAM binds to the server's certificate when the server offers it
                // (tls-server-end-point): a man in the middle with another certificate cannot
                // relay the exchange. Under verify-full the certificate is checked anyway, so
                // binding is a second line; under require it is the only one, so there it is
                // mandatory (above). `y` (could bind, server did not offer) lets the server
                // detect a downgrade; `n` when there is nothing to bind to (cleartext, or a
                // certificate whose signature names no single hash).
                let (mechanism, binding) = match stream.channel_binding() {
                    Some(hash) if offered.iter().any(|m| m == SCRAM_SHA_256_PLUS) => (SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(hash)),
                    _ if server_unauthenticated => return Err(unbound(&format!("SASL ({}) without a channel binding the broker can use", offered.join(", ")))),
                    Some(_) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                    None => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                };
                if !offered.iter().any(|m| m == mechanism) {
                    return Err(UpstreamError::UnsupportedAuth(offered.join(", ")));
                }
                let s = ScramSha256::new(password.expose().as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, s.message(), &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
                scram = Some(s);
            }
            Some(Backend::AuthenticationSaslContinue(body)) => {
                let s = scram.as_mut().ok_or_else(|| UpstreamError::Refused("SASL continue before SASL start".into()))?;
                s.update(body.data()).map_err(|e| UpstreamError::Refused(format!("SCRAM: {e}")))?;
                frontend::sasl_response(s.message(), &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
            }
            Some(Backend::AuthenticationSaslFinal(body)) => {
                let s = scram.as_mut().ok_or_else(|| UpstreamError::Refused("SASL final before SASL start".into()))?;
                // Verifies the server's signature: a server that does not know the password fails here.
                s.finish(body.data()).map_err(|e| UpstreamError::Refused(format!("SCRAM server signature: {e}")))?;
                scram_verified = true;
                continue;
            }
            Some(Backend::AuthenticationGss | Backend::AuthenticationSspi | Backend::AuthenticationKerberosV5 | Backend::AuthenticationScmCredential) => {
                return Err(UpstreamError::UnsupportedAuth("GSS/SSPI/Kerberos".into()))
            }
            _ => return Err(UpstreamError::Refused(format!("unexpected message {:?} during login", message.tag as char))),
        }
        stream.write_all(&buf).await.map_err(wire::WireError::from)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PostgresTls;
    use tokio::net::TcpListener;

    fn database(upstream: std::net::SocketAddr, tls: PostgresTls) -> DatabaseListener {
        DatabaseListener {
            name: "shop".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.to_string(),
            upstream_host: "127.0.0.1".into(),
            database: "shop".into(),
            provider: "pg".into(),
            tls,
        }
    }

    /// One length-prefixed message (startup packet: no tag) from the client.
    async fn read_packet(s: &mut TcpStream, tagged: bool) -> Vec<u8> {
        if tagged {
            s.read_u8().await.unwrap();
        }
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        body
    }

    fn authentication(code: i32, data: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + data.len() as i32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    #[tokio::test]
    async fn a_tls_mode_without_tls_settings_fails_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pw = Secret::new("pw");
        let addr = listener.local_addr().unwrap();
        for sslmode in [SslMode::Require, SslMode::VerifyFull] {
            let db = database(addr, PostgresTls { sslmode, sslrootcert: None, client: None });
            let server = async {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut got)).await;
                got
            };
            let (result, got) = tokio::join!(login(&db, "cb_user", &pw, &[]), server);
            let e = result.err().expect("a login without TLS settings").to_string();
            assert!(e.contains(&format!("sslmode {sslmode} but no TLS settings")) && e.contains("refusing to continue in cleartext"), "{e}");
            assert!(got.is_empty(), "{sslmode}: the broker sent {got:?} in cleartext");
        }
    }

    #[tokio::test]
    async fn authentication_ok_before_the_scram_server_signature_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pw = Secret::new("pw");
        let db = database(listener.local_addr().unwrap(), PostgresTls::disabled());
        let server = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_packet(&mut s, false).await;
            s.write_all(&authentication(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
            let first = read_packet(&mut s, true).await;
            assert!(first.starts_with(b"SCRAM-SHA-256\0"), "{first:?}");
            // Skips SASLContinue / SASLFinal: never proves it knows the password.
            s.write_all(&authentication(0, b"")).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        };
        let (result, ()) = tokio::join!(login(&db, "cb_user", &pw, &[]), server);
        let e = result.err().expect("an early AuthenticationOk").to_string();
        assert!(e.contains("without proving it knows the password"), "{e}");
    }

    #[tokio::test]
    async fn cleartext_on_loopback_with_sslmode_disable_still_logs_in() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pw = Secret::new("pw");
        let db = database(listener.local_addr().unwrap(), PostgresTls::disabled());
        let server = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_packet(&mut s, false).await;
            s.write_all(&authentication(3, b"")).await.unwrap();
            let password = read_packet(&mut s, true).await;
            s.write_all(&authentication(0, b"")).await.unwrap();
            password
        };
        let (result, password) = tokio::join!(login(&db, "cb_user", &pw, &[]), server);
        assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
        assert_eq!(password, b"pw\0");
    }
}
