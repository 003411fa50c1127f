use std::sync::Arc;

use super::*;

/// The bytes a real rustls client sends first, for `server_name` (TLS 1.2 and 1.3 offered).
fn rustls_client_hello(server_name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn reads_the_server_name_from_a_rustls_client_hello() {
    let hello = rustls_client_hello("API.GitHub.test");
    assert_eq!(parse_client_hello(&hello), ClientHello::Complete { server_name: Some("api.github.test".into()) });
}

#[test]
fn every_prefix_of_a_client_hello_asks_for_more() {
    let hello = rustls_client_hello("api.github.test");
    assert!(starts_like_tls(&hello));
    for cut in 0..hello.len() {
        assert_eq!(parse_client_hello(&hello[..cut]), ClientHello::Incomplete, "prefix of {cut} bytes");
    }
}

#[test]
fn trailing_bytes_after_the_hello_do_not_matter() {
    let mut hello = rustls_client_hello("s3.amazonaws.com");
    hello.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    assert_eq!(parse_client_hello(&hello), ClientHello::Complete { server_name: Some("s3.amazonaws.com".into()) });
}

#[test]
fn a_hello_split_over_two_records_is_joined() {
    let hello = rustls_client_hello("api.github.test");
    let payload = &hello[5..];
    let (a, b) = payload.split_at(40);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[0x16, 0x03, 0x01]);
        split.extend_from_slice(&(part.len() as u16).to_be_bytes());
        split.extend_from_slice(part);
    }
    assert_eq!(parse_client_hello(&split), ClientHello::Complete { server_name: Some("api.github.test".into()) });
}

#[test]
fn a_hello_for_an_ip_address_has_no_server_name() {
    let hello = rustls_client_hello("10.1.2.3");
    assert_eq!(parse_client_hello(&hello), ClientHello::Complete { server_name: None });
}

#[test]
fn plain_http_and_postgres_are_not_tls() {
    assert!(!starts_like_tls(b"GET / HTTP/1.1\r\n"));
    assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ClientHello::NotTls);
    // A Postgres SSLRequest: length 8, code 80877103.
    assert_eq!(parse_client_hello(&[0, 0, 0, 8, 4, 210, 22, 47]), ClientHello::NotTls);
}

#[test]
fn damaged_hellos_are_malformed_not_panics() {
    let hello = rustls_client_hello("api.github.test");
    // Claim a longer handshake body than the records carry, then end the record stream.
    let mut bad = hello.clone();
    bad[5] = 0x02; // ServerHello, not ClientHello
    assert!(matches!(parse_client_hello(&bad), ClientHello::Malformed(_)));
    // Flip every byte of the body in turn: parsing must never panic.
    for i in 9..hello.len() {
        let mut damaged = hello.clone();
        damaged[i] ^= 0xff;
        let _ = parse_client_hello(&damaged);
    }
}
