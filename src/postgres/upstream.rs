//! The upstream side: connect to the server and log in as the minted user (SCRAM-SHA-256, md5 or
//! cleartext, as the server asks), up to `AuthenticationOk`.

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{self, error_fields, read_message};
use crate::providers::Secret;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the database at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the database refused the login: {0}")]
    Refused(String),
    #[error("the database asked for an authentication method the broker does not speak ({0})")]
    UnsupportedAuth(String),
    #[error("talking to the database: {0}")]
    Wire(#[from] wire::WireError),
}

/// A logged-in upstream connection; the server's `ParameterStatus`, `BackendKeyData` and
/// `ReadyForQuery` follow on the stream.
pub async fn login(addr: &str, user: &str, password: &Secret, startup: &[(String, String)]) -> Result<TcpStream, UpstreamError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|source| UpstreamError::Connect { addr: addr.into(), source })?;
    let _ = stream.set_nodelay(true);
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
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(UpstreamError::UnsupportedAuth(offered.join(", ")));
                }
                let s = ScramSha256::new(password.expose().as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut buf).map_err(|e| UpstreamError::Refused(e.to_string()))?;
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
