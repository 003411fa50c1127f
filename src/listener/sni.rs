//! Server name from a TLS ClientHello, read from bytes the transparent listener has buffered (they
//! are replayed to the TLS acceptor or the upstream afterwards, so nothing is consumed here).

/// What the first bytes of a connection say about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// A complete ClientHello; its `server_name` (lowercased), if it sent one.
    Complete { server_name: Option<String> },
    /// Looks like TLS so far; read more bytes.
    Incomplete,
    /// The connection does not start with a TLS handshake record.
    NotTls,
    /// A TLS handshake record that is not a well-formed ClientHello.
    Malformed(&'static str),
}

const HANDSHAKE_RECORD: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const SERVER_NAME_EXTENSION: u16 = 0x0000;
const HOST_NAME: u8 = 0x00;

/// Whether the first byte could begin a TLS handshake (the quick check before buffering more).
pub fn starts_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&HANDSHAKE_RECORD)
}

/// Parse the ClientHello at the start of `buf`. It may span several handshake records; they are
/// joined before parsing.
pub fn parse_client_hello(buf: &[u8]) -> ClientHello {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return ClientHello::Incomplete;
        }
        if rest[0] != HANDSHAKE_RECORD {
            return if handshake.is_empty() { ClientHello::NotTls } else { ClientHello::Malformed("a non-handshake record inside the ClientHello") };
        }
        if rest.len() >= 2 && rest[1] != 0x03 {
            return ClientHello::NotTls;
        }
        if rest.len() < 5 {
            return ClientHello::Incomplete;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16_384 + 256 {
            return ClientHello::Malformed("bad record length");
        }
        if rest.len() < 5 + len {
            return ClientHello::Incomplete;
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return ClientHello::Malformed("the first handshake message is not a ClientHello");
            }
            let body_len = (usize::from(handshake[1]) << 16) | (usize::from(handshake[2]) << 8) | usize::from(handshake[3]);
            if handshake.len() >= 4 + body_len {
                return match server_name(&handshake[4..4 + body_len]) {
                    Ok(server_name) => ClientHello::Complete { server_name },
                    Err(why) => ClientHello::Malformed(why),
                };
            }
        }
    }
}

/// A cursor over a ClientHello body that fails instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated ClientHello");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn server_name(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != SERVER_NAME_EXTENSION {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == HOST_NAME {
                let name = std::str::from_utf8(name).map_err(|_| "server_name is not ASCII")?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
                    return Err("server_name is not a host name");
                }
                return Ok(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
