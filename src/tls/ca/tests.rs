use super::*;

#[tokio::test]
async fn one_leaf_per_host_shared_by_concurrent_callers() {
    let ca = Arc::new(CertificateAuthority::generate(&["example.test".into()], Duration::from_secs(3600)).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move { ca.server_config("api.example.test").await.unwrap() }));
    }
    let first = tasks.remove(0).await.unwrap();
    for t in tasks {
        assert!(Arc::ptr_eq(&first, &t.await.unwrap()));
    }
    let other = ca.server_config("b.example.test").await.unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

/// The name constraints are what make trusting this CA safe: a standard verifier (webpki, as
/// rustls and most clients use) rejects any certificate it signs for a host outside them.
#[test]
fn certificates_outside_the_routed_names_do_not_verify() {
    let ca = CertificateAuthority::generate(&["example.test".into()], Duration::from_secs(3600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    use rustls::client::danger::ServerCertVerifier as _;
    let verify = |host: &str| {
        let (leaf, _) = ca.sign_leaf(host).unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
        verifier.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
    };
    assert!(verify("api.example.test").is_ok());
    let err = verify("www.bank.test").unwrap_err();
    assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
}

#[tokio::test]
async fn the_leaf_cache_keeps_the_most_recently_used_hosts_only() {
    let ca = CertificateAuthority::generate_with_cache(&["example.test".into()], Duration::from_secs(3600), 3).unwrap();
    let first = ca.server_config("h0.example.test").await.unwrap();
    for i in 1..50 {
        ca.server_config(&format!("h{i}.example.test")).await.unwrap();
        // h0 stays in use, so it stays cached while the others churn through.
        assert!(Arc::ptr_eq(&first, &ca.server_config("h0.example.test").await.unwrap()), "h0 was evicted at step {i}");
    }
    assert_eq!(ca.cached_leaves(), 3);
    let h1_again = ca.server_config("h1.example.test").await.unwrap();
    assert_eq!(ca.cached_leaves(), 3, "a re-minted leaf replaces another, the cache does not grow");
    assert!(Arc::ptr_eq(&h1_again, &ca.server_config("h1.example.test").await.unwrap()));
}

#[tokio::test]
async fn a_leaf_due_for_refresh_is_minted_anew() {
    // A zero TTL makes every leaf due for refresh at once.
    let ca = CertificateAuthority::generate(&["example.test".into()], Duration::ZERO).unwrap();
    let a = ca.server_config("api.example.test").await.unwrap();
    let b = ca.server_config("api.example.test").await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(ca.cached_leaves(), 1);
}

/// webpki's verdict on a leaf this CA signs for `host` (a DNS name or an IP literal).
fn verify(ca: &CertificateAuthority, host: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    use rustls::client::danger::ServerCertVerifier as _;
    let (leaf, _) = ca.sign_leaf(&canonical_host(host)).unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    verifier.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now()).map(|_| ())
}

#[test]
fn an_ip_route_gets_an_ip_san_and_only_that_address_verifies() {
    let ca = CertificateAuthority::generate(&["example.test".into(), "127.0.0.1".into(), "::1".into()], Duration::from_secs(3600)).unwrap();
    verify(&ca, "127.0.0.1").expect("the routed IPv4 address");
    verify(&ca, "::1").expect("the routed IPv6 address");
    verify(&ca, "api.example.test").expect("names still verify");
    for other in ["127.0.0.2", "10.0.0.1", "169.254.169.254", "::2"] {
        let err = verify(&ca, other).unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{other}: {err:?}");
    }
    let (leaf, _) = ca.sign_leaf("127.0.0.1").unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "an empty subject needs a critical SAN");
    assert_eq!(format!("{:?}", san.value.general_names), "[IPAddress([127, 0, 0, 1])]");
}

#[test]
fn without_ip_routes_the_ca_vouches_for_no_ip_address() {
    let ca = CertificateAuthority::generate(&["example.test".into()], Duration::from_secs(3600)).unwrap();
    for ip in ["127.0.0.1", "169.254.169.254", "::1"] {
        let err = verify(&ca, ip).unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{ip}: {err:?}");
    }
    // Only IPv4 routed: every IPv6 address is still excluded.
    let ca = CertificateAuthority::generate(&["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    verify(&ca, "127.0.0.1").unwrap();
    assert!(verify(&ca, "::1").is_err());
    assert!(verify(&ca, "api.example.test").is_err(), "no DNS name is permitted when only an IP is routed");
}
