//! The upstream side: connect to the server (TLS per the database's `sslmode`) and log in as the
//! minted user (SCRAM-SHA-256, md5 or cleartext, as the server asks), up to `AuthenticationOk`.

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

/// Bound on the TCP connection, the `SSLRequest` and the TLS handshake together.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let Some(config) = db.tls.client.clone() else {
        return Ok(UpstreamStream::Plain(stream));
    };
    let sslmode = db.tls.sslmode;
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
pub async fn login(db: &DatabaseListener, user: &str, password: &Secret, startup: &[(String, String)]) -> Result<UpstreamStream, UpstreamError> {
    let mut stream = connect(db).await?;
    let mut buf = BytesMut::new();
    let params: Vec<(&str, &str)> = std::iter::once(("user", user)).chain(startup.iter().map(|(k, v)| (k.as_str(), v.as_str()))).collect();
    frontend::startup_message(params, &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
    stream.write_all(&buf).await.map_err(wire::WireError::from)?;
    let mut scram: Option<ScramSha256> = None;
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
            Some(Backend::AuthenticationOk) => return Ok(stream),
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
                // Over TLS, SCRAM binds to the server's certificate when the server offers it
                // (tls-server-end-point): a man in the middle with another certificate cannot
                // relay the exchange, which matters most with sslmode require.
                // `y` (could bind, server did not offer) lets the server detect a downgrade;
                // `n` when there is nothing to bind to (cleartext, or a certificate whose
                // signature names no single hash).
                let (mechanism, binding) = match stream.channel_binding() {
                    Some(hash) if offered.iter().any(|m| m == SCRAM_SHA_256_PLUS) => (SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(hash)),
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
