//! Postgres wire framing: the untagged startup packet, tagged messages (`tag, i32 length, body`)
//! in both directions, and the few messages the broker writes itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `SSLRequest`, `GSSENCRequest`, `CancelRequest` and protocol 3.0 codes of a startup packet.
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// No message the broker accepts is bigger (Postgres' own limit for most messages is 1 GB; a
/// query of 64 MiB is already far beyond what an agent sends).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("the agent did not finish its startup within {0:?}")]
    Silent(std::time::Duration),
}

/// One startup packet: its code and the bytes after it.
pub struct StartupPacket {
    pub code: i32,
    pub body: Bytes,
}

impl StartupPacket {
    /// The `key\0value\0…\0` parameters of a protocol 3.0 startup message.
    pub fn parameters(&self) -> Result<Vec<(String, String)>, WireError> {
        let mut out = Vec::new();
        let mut parts = self.body.split(|b| *b == 0);
        loop {
            let key = parts.next().ok_or(WireError::Malformed("unterminated startup parameters"))?;
            if key.is_empty() {
                return Ok(out);
            }
            let value = parts.next().ok_or(WireError::Malformed("startup parameter without value"))?;
            out.push((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()));
        }
    }
}

pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<StartupPacket, WireError> {
    let len = read_i32(r).await?;
    if !(8..=10_000).contains(&len) {
        return Err(WireError::Malformed("startup packet length"));
    }
    let code = read_i32(r).await?;
    let mut body = vec![0u8; len as usize - 8];
    r.read_exact(&mut body).await?;
    Ok(StartupPacket { code, body: body.into() })
}

/// A tagged message; `raw` is the whole frame (tag and length included), ready to forward.
pub struct Message {
    pub tag: u8,
    pub raw: BytesMut,
}

impl Message {
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Message, WireError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 || len as usize > MAX_MESSAGE {
        return Err(WireError::Malformed("message length"));
    }
    let mut raw = BytesMut::with_capacity(len as usize + 1);
    raw.put_slice(&head);
    raw.resize(len as usize + 1, 0);
    r.read_exact(&mut raw[5..]).await?;
    Ok(Message { tag: head[0], raw })
}

async fn read_i32<R: AsyncRead + Unpin>(r: &mut R) -> Result<i32, WireError> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b).await {
        Ok(_) => Ok(i32::from_be_bytes(b)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// A NUL-terminated string at the start of `buf`, and the rest.
pub fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let end = buf.iter().position(|b| *b == 0).ok_or(WireError::Malformed("unterminated string"))?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| WireError::Malformed("string is not UTF-8"))?;
    Ok((s, &buf[end + 1..]))
}

/// The query of a `Query` message.
pub fn query_text(body: &[u8]) -> Result<&str, WireError> {
    Ok(cstr(body)?.0)
}

/// A `Parse` message: statement name and query (parameter types follow, untouched).
pub fn parse_fields(body: &[u8]) -> Result<(&str, &str, &[u8]), WireError> {
    let (name, rest) = cstr(body)?;
    let (query, rest) = cstr(rest)?;
    Ok((name, query, rest))
}

fn frame(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

/// `Query` with `sql`.
pub fn query(sql: &str) -> BytesMut {
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    frame(b'Q', &body)
}

/// `Parse` of `sql` as statement `name`, keeping the original parameter types.
pub fn parse(name: &str, sql: &str, parameter_types: &[u8]) -> BytesMut {
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(parameter_types);
    frame(b'P', &body)
}

/// `ErrorResponse` (severity ERROR) with `code` and `message`.
pub fn error_response(severity: &str, code: &str, message: &str) -> BytesMut {
    let mut body = Vec::new();
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(b'E', &body)
}

/// `AuthenticationOk`.
pub fn authentication_ok() -> BytesMut {
    frame(b'R', &0i32.to_be_bytes())
}

/// `AuthenticationCleartextPassword`: the agent answers with a `PasswordMessage` (`p`).
pub fn authentication_cleartext_password() -> BytesMut {
    frame(b'R', &3i32.to_be_bytes())
}

/// The fields of an `ErrorResponse` or `NoticeResponse` body: (field type, value).
pub fn error_fields(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while body.has_remaining() && body[0] != 0 {
        let field = body.get_u8();
        match cstr(body) {
            Ok((value, rest)) => {
                out.push((field, value.to_string()));
                body = rest;
            }
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_through_framing() {
        let mut raw = query("SELECT 1").to_vec();
        raw.extend_from_slice(&parse("s1", "SELECT $1", &[0, 1, 0, 0, 0, 23]));
        let mut r = &raw[..];
        let q = read_message(&mut r).await.unwrap();
        assert_eq!((q.tag, query_text(q.body()).unwrap()), (b'Q', "SELECT 1"));
        let p = read_message(&mut r).await.unwrap();
        let (name, sql, types) = parse_fields(p.body()).unwrap();
        assert_eq!((p.tag, name, sql, types), (b'P', "s1", "SELECT $1", &[0u8, 1, 0, 0, 0, 23][..]));
        assert!(matches!(read_message(&mut r).await, Err(WireError::Closed)));
        let e = error_response("ERROR", "42501", "denied");
        let fields = error_fields(&e[5..]);
        assert!(fields.contains(&(b'C', "42501".into())) && fields.contains(&(b'M', "denied".into())));
    }
}
