//! The `sts` provider against a real moto (signature and IAM checks on): AssumeRole with the base
//! user's key, the exact session policy, its duration and time condition, and the credentials it
//! yields working (and being needed) for the one S3 call they were minted for.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use credential_broker::classify::{Permission, Scope};
use credential_broker::config::{RetryConfig, StsSettings};
use credential_broker::providers::retry::with_retries;
use credential_broker::providers::sts::{session_policy, StsProvider};
use credential_broker::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest};
use support::moto::{Moto, WireTap, ROLE_ARN};
use support::pki::TestCa;

const BUCKET: &str = "bucket-a";
const KEY: &str = "reports/q1.csv";
const OBJECT_ARN: &str = "arn:aws:s3:::bucket-a/reports/q1.csv";

fn settings(endpoint: url::Url) -> StsSettings {
    StsSettings { role_arn: ROLE_ARN.into(), tenant_roles: BTreeMap::new(), region: "us-east-1".into(), endpoint_url: Some(endpoint), external_id: None }
}

async fn provider(moto: &Moto, settings: &StsSettings, secret: &str) -> StsProvider {
    let base = Credentials::new(&moto.base_access_key_id, secret, None, None, "test");
    StsProvider::with_credentials("aws", settings, None, base).await.unwrap()
}

fn request(p: &StsProvider, scope: Scope, ttl: Duration, request_id: &str) -> MintRequest {
    MintRequest {
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: BTreeMap::new() },
        credential_scope: p.credential_scope(&scope, "GET"),
        scope,
        ttl,
        request_id: request_id.into(),
    }
}

fn s3_scope(perms: &[(&str, &str)]) -> Scope {
    Scope {
        service: "s3".into(),
        region: Some("us-east-1".into()),
        permissions: perms.iter().map(|(a, r)| Permission { action: (*a).into(), resource: (*r).into() }).collect(),
    }
}

fn session(lease: &Lease) -> (String, String, String) {
    match &lease.credential {
        Credential::AwsSession { access_key_id, secret_access_key, session_token } => {
            (access_key_id.expose().to_string(), secret_access_key.expose().to_string(), session_token.expose().to_string())
        }
        other => panic!("expected AWS session credentials, got {other:?}"),
    }
}

/// `aws s3api …` straight to moto with the lease's credentials (or without its token).
fn s3api(moto: &Moto, lease: &Lease, with_token: bool, args: &[&str]) -> std::process::Output {
    let (id, secret, token) = session(lease);
    let endpoint = moto.endpoint();
    let mut env = vec![("AWS_ENDPOINT_URL", endpoint.as_str()), ("AWS_ACCESS_KEY_ID", id.as_str()), ("AWS_SECRET_ACCESS_KEY", secret.as_str())];
    if with_token {
        env.push(("AWS_SESSION_TOKEN", token.as_str()));
    }
    let mut all = vec!["s3api"];
    all.extend_from_slice(args);
    moto.aws(&all, &env)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\nstdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty() && !text.contains(s), "a secret value leaked into: {text}");
    }
}

fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mints_a_session_that_works_for_exactly_the_call_it_was_minted_for() {
    let moto = Moto::start();
    let tap = WireTap::start(moto.addr()).await;
    let p = provider(&moto, &settings(tap.url()), &moto.base_secret_access_key).await;
    assert_eq!(p.kind(), "sts");

    // Set the object up with a session scoped to creating the bucket and writing the one key:
    // two permissions on two resources, two statements.
    let setup = p
        .mint(&request(&p, s3_scope(&[("s3:CreateBucket", "arn:aws:s3:::bucket-a"), ("s3:PutObject", OBJECT_ARN)]), Duration::from_secs(900), "req-setup"))
        .await
        .unwrap();
    assert_eq!(
        setup.credential_scope,
        concat!(
            r#"{"Version":"2012-10-17","Statement":["#,
            r#"{"Effect":"Allow","Action":"s3:CreateBucket","Resource":"arn:aws:s3:::bucket-a"},"#,
            r#"{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::bucket-a/reports/q1.csv"}]}"#
        )
    );
    assert_ok(&s3api(&moto, &setup, true, &["create-bucket", "--bucket", BUCKET]), "create-bucket");
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("q1.csv");
    std::fs::write(&body, "quarter,revenue\nq1,42\n").unwrap();
    assert_ok(&s3api(&moto, &setup, true, &["put-object", "--bucket", BUCKET, "--key", KEY, "--body", body.to_str().unwrap()]), "put-object");

    // The lease under test: s3:GetObject on the one object, an hour.
    let before = SystemTime::now();
    let req = request(&p, s3_scope(&[("s3:GetObject", OBJECT_ARN)]), Duration::from_secs(3600), "req-0193f2");
    let lease = p.mint(&req).await.unwrap();
    let expected_policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-a/reports/q1.csv"}]}"#;
    assert_eq!(lease.credential_scope, expected_policy);
    assert_eq!(req.credential_scope, expected_policy);
    assert_eq!(lease.provider, "aws");
    assert_eq!(lease.identity, req.identity);
    let (key_id, secret, token) = session(&lease);
    assert!(key_id.starts_with("ASIA"), "not a session key id: {key_id}");
    let lifetime = secs_between(before, lease.expires_at);
    assert!((3590..=3600).contains(&lifetime), "lease lives {lifetime} s");

    // It works for that call…
    let out_file = dir.path().join("out.csv");
    assert_ok(&s3api(&moto, &lease, true, &["get-object", "--bucket", BUCKET, "--key", KEY, out_file.to_str().unwrap()]), "get-object");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "quarter,revenue\nq1,42\n");
    // …and moto really checks: without the session token, or signed by the base user (who may
    // only assume the role), the same call is refused.
    let no_token = s3api(&moto, &lease, false, &["get-object", "--bucket", BUCKET, "--key", KEY, out_file.to_str().unwrap()]);
    assert!(!no_token.status.success() && String::from_utf8_lossy(&no_token.stderr).contains("InvalidAccessKeyId"), "{no_token:?}");
    let endpoint = moto.endpoint();
    let as_user = moto.aws(
        &["s3api", "get-object", "--bucket", BUCKET, "--key", KEY, out_file.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", &endpoint), ("AWS_ACCESS_KEY_ID", &moto.base_access_key_id), ("AWS_SECRET_ACCESS_KEY", &moto.base_secret_access_key)],
    );
    assert!(!as_user.status.success() && String::from_utf8_lossy(&as_user.stderr).contains("AccessDenied"), "{as_user:?}");

    // What went over the wire to STS, parameter by parameter.
    let posts = tap.form_posts("AssumeRole");
    assert_eq!(posts.len(), 2, "one AssumeRole call per mint (the SDK's own retries are off)");
    let sent = &posts[1];
    assert_eq!(sent["RoleArn"], ROLE_ARN);
    assert_eq!(sent["Policy"], expected_policy);
    assert_eq!(sent["DurationSeconds"], "3600");
    assert_eq!(sent["RoleSessionName"], "agent-7@req-0193f2");
    assert_eq!(sent["SourceIdentity"], "agent-7");
    assert_eq!(
        (sent["Tags.member.1.Key"].as_str(), sent["Tags.member.1.Value"].as_str(), sent["Tags.member.2.Key"].as_str(), sent["Tags.member.2.Value"].as_str()),
        ("agent", "agent-7", "tenant", "acme")
    );
    assert!(!sent.contains_key("ExternalId"));
    // And what moto's STS recorded for the session.
    let issued = moto.assumed_roles();
    let recorded = issued.iter().find(|r| r["access_key_id"] == key_id.as_str()).expect("moto knows the session");
    assert_eq!(recorded["policy"], expected_policy);
    assert_eq!(recorded["session_name"], "agent-7@req-0193f2");
    assert_eq!(recorded["role_arn"], ROLE_ARN);

    // No formatting path shows the secrets.
    let shown = format!("{lease:?} {setup:?}");
    assert_no_secrets(&shown, &[&key_id, &secret, &token]);
    assert_no_secrets(&shown, &[&moto.base_secret_access_key]);
    assert!(shown.contains("[redacted]"));

    // revoke is a documented no-op; rotate is not supported.
    p.revoke(&lease).await.unwrap();
    assert!(!p.rotate("anything").await.unwrap_err().retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_asks_for_900_seconds_and_ends_the_session_by_condition() {
    let moto = Moto::start();
    let tap = WireTap::start(moto.addr()).await;
    let p = provider(&moto, &settings(tap.url()), &moto.base_secret_access_key).await;
    let scope = s3_scope(&[("s3:GetObject", OBJECT_ARN)]);
    let before = SystemTime::now();
    let lease = p.mint(&request(&p, scope.clone(), Duration::from_secs(300), "req-short")).await.unwrap();
    let after = SystemTime::now();

    // The lease ends at the condition's time: now + 300 s, whole seconds.
    assert!(secs_between(before, lease.expires_at) >= 299 && secs_between(after, lease.expires_at) <= 300, "{:?}", lease.expires_at);
    let not_after = credential_broker::providers::sts::rfc3339_utc(lease.expires_at);
    let expected = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-a/reports/q1.csv","Condition":{{"DateLessThan":{{"aws:CurrentTime":"{not_after}"}}}}}}]}}"#
    );
    assert_eq!(lease.credential_scope, expected);
    assert_eq!(lease.credential_scope, session_policy(&scope, Some(lease.expires_at)));

    let posts = tap.form_posts("AssumeRole");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["DurationSeconds"], "900");
    assert_eq!(posts[0]["Policy"], expected);
    let (key_id, _, _) = session(&lease);
    let issued = moto.assumed_roles();
    assert_eq!(issued.iter().find(|r| r["access_key_id"] == key_id.as_str()).expect("moto knows the session")["policy"], expected.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_base_credentials_and_untrusted_roles_fail_permanently_and_are_not_retried() {
    let moto = Moto::start();
    let scope = s3_scope(&[("s3:GetObject", OBJECT_ARN)]);
    let retry = RetryConfig { max_retries: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
    let wrong_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzWRONGSECRET";

    // The right key id with a wrong secret: moto recomputes the signature and refuses it.
    let p = provider(&moto, &settings(moto.endpoint_url()), wrong_secret).await;
    let req = request(&p, scope.clone(), Duration::from_secs(300), "req-badsig");
    let failure = with_retries(&retry, |_| p.mint(&req)).await.unwrap_err();
    assert_eq!(failure.attempts, 1, "a refused signature is not retried");
    assert!(!failure.last_error.retryable);
    assert!(failure.last_error.message.contains("SignatureDoesNotMatch"), "{}", failure.last_error.message);
    let shown = format!("{failure} {failure:?}");
    assert_no_secrets(&shown, &[wrong_secret, &moto.base_secret_access_key]);

    // A key id moto never issued.
    let unknown = Credentials::new("AKIAIOSFODNN7EXAMPLE", wrong_secret, None, None, "test");
    let p = StsProvider::with_credentials("aws", &settings(moto.endpoint_url()), None, unknown).await.unwrap();
    let e = p.mint(&request(&p, scope.clone(), Duration::from_secs(300), "req-unknown")).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("InvalidClientTokenId"), "{}", e.message);
    assert_no_secrets(&format!("{e} {e:?}"), &[wrong_secret, "AKIAIOSFODNN7EXAMPLE"]);

    // Good credentials, but the tenant's role does not trust the broker's user: AccessDenied.
    let mut s = settings(moto.endpoint_url());
    s.tenant_roles.insert("acme".into(), "arn:aws:iam::123456789012:role/someone-elses-role".into());
    let p = provider(&moto, &s, &moto.base_secret_access_key).await;
    let req = request(&p, scope, Duration::from_secs(300), "req-denied");
    let failure = with_retries(&retry, |_| p.mint(&req)).await.unwrap_err();
    assert_eq!(failure.attempts, 1, "AccessDenied is not retried");
    assert!(!failure.last_error.retryable);
    assert!(failure.last_error.message.contains("AccessDenied") && failure.last_error.message.contains("someone-elses-role"), "{}", failure.last_error.message);
    assert_no_secrets(&format!("{failure:?}"), &[&moto.base_secret_access_key, &moto.base_access_key_id]);
    assert!(moto.assumed_roles().is_empty(), "no session was issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_unreachable_is_retryable() {
    let mut moto = Moto::start();
    let p = provider(&moto, &settings(moto.endpoint_url()), &moto.base_secret_access_key).await;
    let req = request(&p, s3_scope(&[("s3:GetObject", OBJECT_ARN)]), Duration::from_secs(300), "req-down");
    // Up: works. Stopped: a retryable failure, and the broker's retry loop spends every retry.
    p.mint(&req).await.unwrap();
    moto.stop();
    let e = p.mint(&req).await.unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("STS unreachable"), "{}", e.message);
    assert_no_secrets(&format!("{e:?}"), &[&moto.base_secret_access_key]);
    let retry = RetryConfig { max_retries: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
    let failure = with_retries(&retry, |_| p.mint(&req)).await.unwrap_err();
    assert_eq!(failure.attempts, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_over_https_is_verified_against_the_extra_ca() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let tap = WireTap::start_tls(moto.addr(), ca.server_config(&["localhost"])).await;
    let base = Credentials::new(&moto.base_access_key_id, &moto.base_secret_access_key, None, None, "test");
    let scope = s3_scope(&[("s3:GetObject", OBJECT_ARN)]);

    // Trusting the upstream CA (tls.upstream_ca_file): the TLS endpoint is accepted.
    let p = StsProvider::with_credentials("aws", &settings(tap.https_url()), Some(&ca.cert_path), base.clone()).await.unwrap();
    let lease = p.mint(&request(&p, scope.clone(), Duration::from_secs(300), "req-tls")).await.unwrap();
    assert!(session(&lease).0.starts_with("ASIA"));
    assert_eq!(tap.form_posts("AssumeRole").len(), 1);

    // Without it, the certificate is refused and nothing reaches STS.
    let p = StsProvider::with_credentials("aws", &settings(tap.https_url()), None, base).await.unwrap();
    let e = p.mint(&request(&p, scope, Duration::from_secs(300), "req-untrusted")).await.unwrap_err();
    assert!(e.message.contains("certificate"), "{}", e.message);
    assert_eq!(tap.form_posts("AssumeRole").len(), 1);
}

/// `StsProvider::new` takes its base credentials from the standard chain; here the environment
/// (the development setup). Run in a child process so the variables touch no other test.
#[test]
fn the_standard_chain_supplies_the_base_credentials() {
    let moto = Moto::start();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["chain_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CB_STS_CHILD_ENDPOINT", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", &moto.base_access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &moto.base_secret_access_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    assert!(text.contains("chain_child: minted ASIA"), "{text}");
}

#[tokio::test]
#[ignore = "run by the_standard_chain_supplies_the_base_credentials in a child process"]
async fn chain_child() {
    let Ok(endpoint) = std::env::var("CB_STS_CHILD_ENDPOINT") else { return };
    let p = StsProvider::new("aws", &settings(endpoint.parse().unwrap()), None).await.unwrap();
    let lease = p.mint(&request(&p, s3_scope(&[("s3:GetObject", OBJECT_ARN)]), Duration::from_secs(600), "req-chain")).await.unwrap();
    let (key_id, _, _) = session(&lease);
    println!("chain_child: minted {}", &key_id[..4]);
}
