//! The serving certificate follows cert-manager's rotations without a restart.

mod common;

use std::time::Duration;

use common::{eventually, TestServer};
use http::StatusCode;
use sidecar_injector::InjectorConfig;

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart() {
    let mut server = TestServer::start_with(InjectorConfig::default(), Duration::from_millis(25)).await;
    let first = server.get("/healthz").await.served;

    let rotated = server.ca.leaf();
    assert_ne!(rotated.der, first);
    server.certs.write(&rotated);
    let server = &server;
    let picked_up = eventually(Duration::from_secs(10), || async { server.get("/healthz").await.served == rotated.der }).await;
    assert!(picked_up, "the rotated certificate was never served");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_half_written_rotation_keeps_the_old_pair() {
    let server = TestServer::start_with(InjectorConfig::default(), Duration::from_millis(25)).await;
    let serving = server.get("/healthz").await.served;

    // cert-manager's new certificate has arrived but the key is still the old one: the pair
    // does not match, so the server must keep presenting the old, working pair.
    let next = server.ca.leaf();
    let old_key = std::fs::read_to_string(server.certs.key_path()).expect("read key");
    let mismatched = common::Leaf { cert_pem: next.cert_pem.clone(), key_pem: old_key, der: next.der.clone() };
    let mut server = server;
    server.certs.write(&mismatched);
    let reload = sidecar_injector::server::ReloadingCert::load(&server.certs.cert_path(), &server.certs.key_path());
    assert!(reload.is_err(), "a certificate with someone else's key must not load");
    // Watch for many reload intervals: every handshake in that window must get the old pair.
    let window_end = tokio::time::Instant::now() + Duration::from_millis(300);
    let mut handshakes = 0;
    while tokio::time::Instant::now() < window_end {
        let answer = server.get("/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.served, serving);
        handshakes += 1;
    }
    assert!(handshakes > 0);

    server.certs.write(&next);
    let server = &server;
    assert!(eventually(Duration::from_secs(10), || async { server.get("/healthz").await.served == next.der }).await);
}
