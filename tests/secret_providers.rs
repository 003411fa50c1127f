//! Cloud secret managers as providers. AWS Secrets Manager runs against a real moto server with
//! its signature and IAM checks on (see `support::moto`): every call the provider makes is SigV4
//! signed with the broker's base credentials, and moto recomputes and compares the signature, then
//! evaluates the caller's IAM policy, before it answers.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use credential_broker::classify::Scope;
use credential_broker::config::{AwsSecretsManagerSettings, RetryConfig};
use credential_broker::providers::aws_secrets_manager::AwsSecretsManagerProvider;
use credential_broker::providers::cache::{CacheKey, LeaseCache, Source};
use credential_broker::providers::retry::with_retries;
use credential_broker::providers::rotation::rotate_and_drop;
use credential_broker::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest};
use futures::FutureExt;
use support::broker::Broker;
use support::clients::curl_via_proxy;
use support::moto::{Moto, REGION};
use support::pki::TestCa;
use support::upstream::HttpsUpstream;

const TOKEN: &str = "vendor-api-token-7f3e9a1c5b2d";
const DB_PASSWORD: &str = "db-password-Q8w2e4r6t8y0";

/// Access keys of the IAM users made for these tests, besides the harness's `credential-broker`
/// user (which may assume a role and do nothing else: the denied caller here).
struct Users {
    /// `secretsmanager:GetSecretValue` and `RotateSecret`: the broker's identity for this provider.
    reader: (String, String),
    /// `secretsmanager:*`: the operator creating, updating and deleting secrets with the aws CLI.
    admin: (String, String),
}

const MAKE_USERS: &str = r#"
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
def user(name, actions):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="secrets", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return [key["AccessKeyId"], key["SecretAccessKey"]]
print(json.dumps({"reader": user("secrets-reader", ["secretsmanager:GetSecretValue", "secretsmanager:RotateSecret"]),
                  "admin": user("secrets-admin", ["secretsmanager:*"])}))
"#;

/// Opens moto's auth window for the IAM setup, then closes it again: from then on every call is
/// checked (`reset-auth` with 0 sets the unauthenticated allowance to nothing).
fn make_users(moto: &Moto) -> Users {
    moto_post(moto.addr(), "/moto-api/reset-auth", "1000000");
    let out = moto.boto3(MAKE_USERS, &[("MOTO_ENDPOINT", moto.endpoint().as_str())]);
    assert!(out.status.success(), "creating IAM users failed: {}", String::from_utf8_lossy(&out.stderr));
    moto_post(moto.addr(), "/moto-api/reset-auth", "0");
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pair = |who: &str| (keys[who][0].as_str().unwrap().to_string(), keys[who][1].as_str().unwrap().to_string());
    Users { reader: pair("reader"), admin: pair("admin") }
}

fn moto_post(addr: SocketAddr, path: &str, body: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "POST {path}: {answer}");
}

/// `aws secretsmanager <args>` as the admin user, straight to moto; returns the JSON answer.
fn admin_aws(moto: &Moto, users: &Users, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["secretsmanager"];
    all.extend_from_slice(args);
    let endpoint = moto.endpoint();
    let out = moto.aws(&all, &[("AWS_ENDPOINT_URL", &endpoint), ("AWS_ACCESS_KEY_ID", &users.admin.0), ("AWS_SECRET_ACCESS_KEY", &users.admin.1)]);
    assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn settings(moto: &Moto, secret_id: &str, json_key: Option<&str>) -> AwsSecretsManagerSettings {
    AwsSecretsManagerSettings {
        secret_id: secret_id.into(),
        version_stage: None,
        version_id: None,
        json_key: json_key.map(str::to_string),
        region: REGION.into(),
        endpoint_url: Some(moto.endpoint_url()),
        ttl: Duration::from_secs(300),
        rotation_lambda_arn: None,
    }
}

async fn provider(moto: &Moto, key: &(String, String), secret_id: &str, json_key: Option<&str>) -> Arc<AwsSecretsManagerProvider> {
    let creds = aws_credential_types::Credentials::new(key.0.clone(), key.1.clone(), None, None, "test");
    Arc::new(AwsSecretsManagerProvider::with_credentials("vendor", &settings(moto, secret_id, json_key), None, creds).await.unwrap())
}

fn request(provider: &dyn CredentialProvider) -> MintRequest {
    let scope = Scope::single("http", None, "http:GET", "https://api.vendor.test/v1/things");
    MintRequest {
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: Default::default() },
        credential_scope: provider.credential_scope(&scope, "GET"),
        scope,
        ttl: Duration::from_secs(600),
        request_id: "req-1".into(),
    }
}

fn token(lease: &Lease) -> &str {
    match &lease.credential {
        Credential::Token(t) => t.expose(),
        other => panic!("expected a token, got {other:?}"),
    }
}

fn fast_retries() -> RetryConfig {
    RetryConfig { max_retries: 3, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_secret_value_whole_and_by_json_key() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let users = make_users(&moto);
    let created = admin_aws(&moto, &users, &["create-secret", "--name", "vendor/api-token", "--secret-string", TOKEN]);
    let db = serde_json::json!({"username": "app", "password": DB_PASSWORD, "port": 5432}).to_string();
    admin_aws(&moto, &users, &["create-secret", "--name", "prod/db", "--secret-string", &db]);

    let whole = provider(&moto, &users.reader, "vendor/api-token", None).await;
    let req = request(whole.as_ref());
    assert_eq!(req.credential_scope, "secretsmanager:vendor/api-token@AWSCURRENT");
    let lease = whole.mint(&req).await.unwrap();
    assert_eq!(token(&lease), TOKEN);
    assert_eq!(lease.provider, "vendor");
    assert_eq!(lease.details.get("secret_arn").map(String::as_str), created["ARN"].as_str());
    assert_eq!(lease.details.get("version_id").map(String::as_str), created["VersionId"].as_str());
    assert!(!format!("{lease:?}").contains(TOKEN), "a lease's Debug shows the secret");
    // The lease lives the provider's TTL (300 s), not the policy's longer one.
    let left = lease.expires_at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(290), "{left:?}");

    let password = provider(&moto, &users.reader, "prod/db", Some("password")).await;
    let lease = password.mint(&request(password.as_ref())).await.unwrap();
    assert_eq!(token(&lease), DB_PASSWORD);
    let port = provider(&moto, &users.reader, "prod/db", Some("port")).await;
    assert_eq!(token(&port.mint(&request(port.as_ref())).await.unwrap()), "5432");

    // A key that is not there: permanent, and the message names the key but no value.
    let missing = provider(&moto, &users.reader, "prod/db", Some("token")).await;
    let e = missing.mint(&request(missing.as_ref())).await.unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("no key \"token\"") && !e.message.contains(DB_PASSWORD), "{}", e.message);
    // json_key on a secret that is not JSON.
    let not_json = provider(&moto, &users.reader, "vendor/api-token", Some("password")).await;
    let e = not_json.mint(&request(not_json.as_ref())).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("not a JSON object") && !e.message.contains(TOKEN), "{}", e.message);

    // A pinned stage: AWSPREVIOUS after an update is the old value.
    admin_aws(&moto, &users, &["put-secret-value", "--secret-id", "vendor/api-token", "--secret-string", "vendor-api-token-second"]);
    let mut previous = settings(&moto, "vendor/api-token", None);
    previous.version_stage = Some("AWSPREVIOUS".into());
    let creds = aws_credential_types::Credentials::new(users.reader.0.clone(), users.reader.1.clone(), None, None, "test");
    let previous = AwsSecretsManagerProvider::with_credentials("vendor", &previous, None, creds).await.unwrap();
    assert_eq!(token(&previous.mint(&request(&previous)).await.unwrap()), TOKEN);
    assert_eq!(token(&whole.mint(&req).await.unwrap()), "vendor-api-token-second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_secret_then_the_cache_serves_the_new_value() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let users = make_users(&moto);
    let created = admin_aws(&moto, &users, &["create-secret", "--name", "vendor/api-token", "--secret-string", TOKEN]);
    let p = provider(&moto, &users.reader, "vendor/api-token", None).await;
    let cache = LeaseCache::new(Duration::from_secs(30), 100);
    let req = request(p.as_ref());
    let key = CacheKey { agent_id: "agent-7".into(), tenant: "acme".into(), provider: "vendor".into(), credential_scope: req.credential_scope.clone() };
    let get = |p: Arc<AwsSecretsManagerProvider>, req: MintRequest| {
        let cache = cache.clone();
        let key = key.clone();
        async move { cache.get_or_mint(key, move || async move { with_retries(&fast_retries(), |_| p.mint(&req)).await }.boxed()).await.map_err(|e| e.to_string()) }
    };
    let (first, source) = get(p.clone(), req.clone()).await.unwrap();
    assert_eq!((token(&first), source), (TOKEN, Source::Minted));
    assert_eq!(get(p.clone(), req.clone()).await.unwrap().1, Source::Cached);

    // Another provider name may not rotate this secret, nor this provider another secret.
    assert!(!p.rotate("some/other-secret").await.unwrap_err().retryable);

    let dropped = rotate_and_drop(p.as_ref(), &cache, "vendor/api-token").await.unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].id, first.id);
    let described = admin_aws(&moto, &users, &["describe-secret", "--secret-id", "vendor/api-token"]);
    assert!(described["LastRotatedDate"].is_number() || described["LastRotatedDate"].is_string(), "RotateSecret was not recorded: {described}");
    let versions = described["VersionIdsToStages"].as_object().unwrap();
    assert!(versions.len() >= 2, "RotateSecret made no new version: {described}");
    let new_current = versions.iter().find(|(_, stages)| stages.as_array().unwrap().iter().any(|s| s == "AWSCURRENT")).unwrap().0.clone();
    assert_ne!(Some(new_current.as_str()), created["VersionId"].as_str());

    // moto runs no rotation Lambda; do its setSecret step: a value for the new version.
    admin_aws(&moto, &users, &["put-secret-value", "--secret-id", "vendor/api-token", "--secret-string", "vendor-api-token-rotated"]);
    let (after, source) = get(p.clone(), req.clone()).await.unwrap();
    assert_eq!((token(&after), source), ("vendor-api-token-rotated", Source::Minted), "the cache kept the old value");

    // A rotation that fails drops nothing.
    let denied = provider(&moto, &(moto.base_access_key_id.clone(), moto.base_secret_access_key.clone()), "vendor/api-token", None).await;
    let e = rotate_and_drop(denied.as_ref(), &cache, "").await.unwrap_err();
    assert!(!e.retryable && e.message.contains("AccessDenied"), "{}", e.message);
    assert_eq!(cache.leases().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_secrets_and_denied_callers_fail_permanently_without_retries() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let users = make_users(&moto);
    admin_aws(&moto, &users, &["create-secret", "--name", "soon-gone", "--secret-string", TOKEN]);
    admin_aws(&moto, &users, &["create-secret", "--name", "gone-now", "--secret-string", TOKEN]);

    // Scheduled for deletion: InvalidRequestException.
    admin_aws(&moto, &users, &["delete-secret", "--secret-id", "soon-gone", "--recovery-window-in-days", "7"]);
    let p = provider(&moto, &users.reader, "soon-gone", None).await;
    let calls = std::sync::atomic::AtomicU32::new(0);
    let req = request(p.as_ref());
    let failure = with_retries(&fast_retries(), |_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        p.mint(&req)
    })
    .await
    .unwrap_err();
    assert_eq!((failure.attempts, calls.load(std::sync::atomic::Ordering::SeqCst)), (1, 1));
    let m = &failure.last_error.message;
    assert!(m.contains("GetSecretValue on soon-gone") && m.contains("InvalidRequestException") && m.contains("marked for deletion"), "{m}");

    // Deleted for good: ResourceNotFoundException.
    admin_aws(&moto, &users, &["delete-secret", "--secret-id", "gone-now", "--force-delete-without-recovery"]);
    let p = provider(&moto, &users.reader, "gone-now", None).await;
    let e = p.mint(&request(p.as_ref())).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("ResourceNotFoundException") && e.message.contains("does not exist"), "{}", e.message);

    // Never existed.
    let p = provider(&moto, &users.reader, "no-such-secret", None).await;
    assert!(p.mint(&request(p.as_ref())).await.unwrap_err().message.contains("ResourceNotFoundException"));

    // The harness's broker user may only assume a role: AccessDenied, once, not retried.
    admin_aws(&moto, &users, &["create-secret", "--name", "guarded", "--secret-string", TOKEN]);
    let denied = provider(&moto, &(moto.base_access_key_id.clone(), moto.base_secret_access_key.clone()), "guarded", None).await;
    let calls = std::sync::atomic::AtomicU32::new(0);
    let req = request(denied.as_ref());
    let failure = with_retries(&fast_retries(), |_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        denied.mint(&req)
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let m = &failure.last_error.message;
    assert!(!failure.last_error.retryable && m.contains("HTTP 403") && m.contains("AccessDenied"), "{m}");
    assert!(!m.contains(&moto.base_secret_access_key) && !m.contains(&moto.base_access_key_id), "key material in the error: {m}");

    // Unknown keys fail signature/identity checks at moto: permanent too.
    let bogus = provider(&moto, &("AKIANOTAREALKEY00000".into(), "nope".into()), "guarded", None).await;
    let e = bogus.mint(&request(bogus.as_ref())).await.unwrap_err();
    assert!(!e.retryable && !e.message.contains("AKIANOTAREALKEY00000"), "{}", e.message);

    // Secrets Manager unreachable: retryable, so the broker retries and then fails closed.
    let mut gone = moto;
    gone.stop();
    let e = p.mint(&request(p.as_ref())).await.unwrap_err();
    assert!(e.retryable, "{}", e.message);
}

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may read things", "ttl_seconds": 600} if {
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.vendor.test/v1/")
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_injects_a_secrets_manager_secret_and_the_agent_never_sees_it() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let users = make_users(&moto);
    let db = serde_json::json!({"username": "app", "api_token": TOKEN, "password": DB_PASSWORD}).to_string();
    admin_aws(&moto, &users, &["create-secret", "--name", "vendor/credentials", "--secret-string", &db]);

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let upstream = HttpsUpstream::start(&ca, &["api.vendor.test"]).await;
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: vendor
    hosts: [api.vendor.test]
    connect_to: "{upstream}"
    provider: vendor-secret
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: credential-broker-placeholder}}}}
providers:
  vendor-secret:
    type: aws_secrets_manager
    secret_id: vendor/credentials
    json_key: api_token
    region: us-east-1
    endpoint_url: "{moto}"
    ttl_seconds: 120
policy: {{file: {dir}/policy.rego}}
credentials: {{retry: {{max_retries: 3, base_delay_ms: 10, max_delay_ms: 50}}}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.path().display(),
        upstream_ca = ca.cert_path.display(),
        upstream = upstream.addr,
        moto = moto.endpoint(),
    );
    let broker = Broker::start(
        dir.path(),
        &yaml,
        &[
            ("AWS_ACCESS_KEY_ID", users.reader.0.as_str()),
            ("AWS_SECRET_ACCESS_KEY", users.reader.1.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ],
    );
    let auth = "Authorization: Bearer credential-broker-placeholder";
    for path in ["/v1/things", "/v1/other"] {
        let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-H", auth], &format!("https://api.vendor.test{path}"));
        assert_eq!(status, 200, "{body}\n{}", broker.log());
        assert!(!body.contains(TOKEN));
    }
    let received = upstream.requests();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    }

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let issues: Vec<_> = records.iter().filter(|r| r["event"] == "issue").collect();
    assert_eq!(issues.len(), 1, "one read, then the cache: {audit}");
    assert_eq!(issues[0]["provider"], "vendor-secret");
    assert_eq!(issues[0]["credential_scope"], "secretsmanager:vendor/credentials@AWSCURRENT#api_token");
    assert!(issues[0]["details"]["secret_arn"].as_str().is_some_and(|a| a.starts_with("arn:aws:secretsmanager:us-east-1:")), "{}", issues[0]);

    let written = format!("{audit}{}", broker.log());
    for secret in [TOKEN, DB_PASSWORD, users.reader.1.as_str()] {
        assert!(!written.contains(secret), "a secret leaked into the broker's log or audit");
    }
}

fn config_problems(providers_yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        "identity: {{agent_id: a, tenant: t}}\npolicy: {{file: policy.rego}}\naudit: {{path: audit.jsonl}}\nroutes:\n  - name: r\n    hosts: [api.vendor.test]\n    provider: p\n    inject: {{header: {{name: Authorization, format: \"Bearer {{secret}}\", placeholder: credential-broker-placeholder}}}}\nproviders:\n  p:\n{providers_yaml}"
    );
    match credential_broker::config::Config::from_yaml(&yaml, dir.path(), &|_| None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn config_validation_names_the_key_path() {
    let ok = "    type: aws_secrets_manager\n    secret_id: vendor/token\n    region: us-east-1\n";
    assert_eq!(config_problems(ok), Vec::<String>::new());

    let unknown = config_problems("    type: aws_secret_manager\n    secret_id: x\n");
    assert!(unknown.len() == 1 && unknown[0].starts_with("providers.p") && unknown[0].contains("unknown variant `aws_secret_manager`"), "{unknown:?}");

    let missing = config_problems("    type: aws_secrets_manager\n    region: us-east-1\n");
    assert!(missing.len() == 1 && missing[0].starts_with("providers.p") && missing[0].contains("missing field `secret_id`"), "{missing:?}");

    let bad = config_problems(
        "    type: aws_secrets_manager\n    secret_id: \"\"\n    version_id: v1\n    version_stage: AWSCURRENT\n    json_key: \"\"\n    endpoint_url: http://10.0.0.1:5000\n    ttl_seconds: 0\n    rotation_lambda_arn: arn:aws:iam::1:role/x\n",
    );
    for expected in [
        "providers.p.secret_id: is required",
        "providers.p.version_id: set either version_id or version_stage",
        "providers.p.json_key: must not be empty",
        "providers.p.region: is required",
        "providers.p.ttl_seconds: must be between 1 and 43200",
        "providers.p.rotation_lambda_arn: \"arn:aws:iam::1:role/x\" is not a Lambda function ARN",
        "providers.p.endpoint_url: \"http://10.0.0.1:5000\" must be an https URL",
    ] {
        assert!(bad.iter().any(|p| p.starts_with(expected)), "no problem starting {expected:?} in {bad:#?}");
    }
}
