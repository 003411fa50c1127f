use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{JwtVerifier, VerifiedAgent};
use crate::config::{JwksSource, JwtSettings};
use crate::identity::jwks::Jwks;

#[path = "../../../tests/support/jwt.rs"]
#[allow(dead_code)]
mod signer;
use signer::{TestIssuer, AUDIENCE, ISSUER};

struct Fixture {
    _dir: tempfile::TempDir,
    issuer: TestIssuer,
    verifier: JwtVerifier,
}

async fn fixture(tenant_claim: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::new("unit");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, issuer.jwks().to_string()).unwrap();
    let tls = crate::upstream::client_tls_config(None).unwrap();
    let client = crate::upstream::build_client(tls, crate::upstream::ConnectTo::new(Vec::new(), Duration::from_secs(1)));
    let jwks = Jwks::load(JwksSource::File(path), client, Duration::from_secs(1)).await.unwrap();
    let settings = JwtSettings {
        jwks: JwksSource::File(Default::default()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        agent_id_claim: "sub".into(),
        tenant_claim: tenant_claim.map(str::to_string),
        leeway: Duration::from_secs(30),
    };
    Fixture { _dir: dir, issuer, verifier: JwtVerifier::new(settings, jwks) }
}

async fn verify(f: &Fixture, token: &str) -> Result<VerifiedAgent, String> {
    f.verifier.verify(token, SystemTime::now()).await
}

#[tokio::test]
async fn accepts_es256_and_rs256_and_reads_the_subject() {
    let f = fixture(None).await;
    for alg in ["ES256", "RS256"] {
        let claims = TestIssuer::claims("system:serviceaccount:team-a:agent");
        let token = f.issuer.sign(alg, &claims);
        // Accepted until exp plus the leeway (30 s), no longer: a database session ends then.
        let expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64().unwrap() + 30));
        let want = VerifiedAgent { agent_id: "system:serviceaccount:team-a:agent".into(), tenant: None, expires_at };
        assert_eq!(verify(&f, &token).await, Ok(want), "{alg}");
    }
}

#[tokio::test]
async fn tenant_claim_may_be_a_json_pointer() {
    let f = fixture(Some("/kubernetes.io/namespace")).await;
    let mut claims = TestIssuer::claims("agent-1");
    claims["kubernetes.io"] = json!({"namespace": "team-a"});
    assert_eq!(verify(&f, &f.issuer.sign("ES256", &claims)).await.unwrap().tenant.as_deref(), Some("team-a"));
    let missing = verify(&f, &f.issuer.sign("ES256", &TestIssuer::claims("agent-1"))).await.unwrap_err();
    assert!(missing.contains("/kubernetes.io/namespace"), "{missing}");
}

#[tokio::test]
async fn refuses_each_broken_token_with_its_reason() {
    let f = fixture(None).await;
    let other = TestIssuer::new("unit");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let with = |k: &str, v: serde_json::Value| {
        let mut c = TestIssuer::claims("agent-1");
        c[k] = v;
        c
    };
    let cases = [
        (f.issuer.sign("ES256", &with("exp", json!(now - 120))), "token expired"),
        (f.issuer.sign("ES256", &with("nbf", json!(now + 600))), "not valid yet"),
        (f.issuer.sign("ES256", &with("iss", json!("https://evil.example"))), "wrong issuer"),
        (f.issuer.sign("ES256", &with("aud", json!("someone-else"))), "wrong audience"),
        (other.sign("ES256", &TestIssuer::claims("agent-1")), "bad token signature"),
        (TestIssuer::unsigned(&TestIssuer::claims("agent-1")), "alg none"),
        ("a.b".to_string(), "malformed token"),
    ];
    for (token, reason) in cases {
        let err = verify(&f, &token).await.unwrap_err();
        assert!(err.contains(reason), "expected {reason:?}, got {err:?}");
        assert!(!err.contains(&token), "the reason must not quote the token");
    }
}

#[tokio::test]
async fn refuses_symmetric_algorithms_and_missing_expiry() {
    let f = fixture(None).await;
    let hs = format!("{}.{}.c2ln", signer_b64(r#"{"alg":"HS256","kid":"unit-es"}"#), signer_b64(&TestIssuer::claims("a").to_string()));
    assert!(verify(&f, &hs).await.unwrap_err().contains("symmetric algorithm HS256"));
    let mut claims = TestIssuer::claims("agent-1");
    claims.as_object_mut().unwrap().remove("exp");
    assert!(verify(&f, &f.issuer.sign("ES256", &claims)).await.unwrap_err().contains("no expiry"));
}

fn signer_b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
