//! Google providers against a local HTTPS server. No Google endpoint is reachable here, so
//! [`FakeGoogle`] follows Google's public REST API reference as written, not captured traffic:
//! - metadata server `GET /computeMetadata/v1/instance/service-accounts/default/token`, refused
//!   without `Metadata-Flavor: Google`, answering `{access_token, expires_in, token_type}`;
//! - OAuth 2.0 token endpoint `POST /token` with the JWT bearer grant
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, RS256 assertion with `iss`,
//!   `scope`, `aud` = token URI, `iat`, `exp`), errors as `{"error": "invalid_grant", …}`;
//! - Secret Manager v1 `GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access`
//!   answering `{name, payload: {data (base64)}}`;
//! - IAM Credentials v1 `POST /v1/projects/-/serviceAccounts/{account}:generateAccessToken` with
//!   `{scope: [...], lifetime: "<n>s"}` answering `{accessToken, expireTime (RFC 3339)}`;
//! - errors in Google's model `{"error": {"code", "message", "status"}}`: 401 UNAUTHENTICATED
//!   without the bearer token, 403 PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED,
//!   503 UNAVAILABLE.
//!
//! The server checks what the broker sends (bearer token, metadata header, JWT signature and
//! claims, scopes, lifetime); the tests check what the broker does with each answer.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use credential_broker::classify::Scope;
use credential_broker::config::{GcpAccessTokenSettings, GcpIdentity, GcpSecretManagerSettings, RetryConfig};
use credential_broker::providers::gcp::{GcpAccessTokenProvider, GcpSecretManagerProvider};
use credential_broker::providers::retry::with_retries;
use credential_broker::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::broker::Broker;
use support::clients::curl_via_proxy;
use support::pki::TestCa;
use support::upstream::HttpsUpstream;

const METADATA_TOKEN: &str = "ya29.metadata-base-token-4f1c2a";
const KEY_FILE_TOKEN: &str = "ya29.keyfile-base-token-9b8e7d";
const SECRET_VALUE: &str = "vendor-secret-from-google-5e6f7a";
const SERVICE_ACCOUNT: &str = "agent-sa@demo-project.iam.gserviceaccount.com";
const KEY_EMAIL: &str = "broker-dev@demo-project.iam.gserviceaccount.com";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const READ_WRITE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Ok = 0,
    NotFound = 1,
    Denied = 2,
    Throttled = 3,
    Unavailable = 4,
    Malformed = 5,
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    metadata_flavor: Option<String>,
    content_type: Option<String>,
    body: String,
}

#[derive(Default)]
struct State {
    mode: AtomicU8,
    api_calls: AtomicU32,
    seen: Mutex<Vec<Seen>>,
    issued: Mutex<Vec<String>>,
    /// PKCS#1 DER of the key file's public key, to verify assertions.
    public_key: Mutex<Vec<u8>>,
    token_uri: Mutex<String>,
}

struct FakeGoogle {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGoogle {
    async fn start(ca: &TestCa) -> FakeGoogle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let state = Arc::new(State::default());
        *state.token_uri.lock().unwrap() = format!("https://localhost:{}/token", addr.port());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = hyper::service::service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        FakeGoogle { addr, state, task }
    }

    fn url(&self) -> url::Url {
        format!("https://localhost:{}", self.addr.port()).parse().unwrap()
    }

    fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn api_calls(&self) -> u32 {
        self.state.api_calls.load(Ordering::SeqCst)
    }

    fn seen(&self, path_contains: &str) -> Vec<Seen> {
        self.state.seen.lock().unwrap().iter().filter(|s| s.path.contains(path_contains)).cloned().collect()
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder().status(status).header("content-type", "application/json; charset=UTF-8").body(Full::new(Bytes::from(body.to_string()))).unwrap())
}

fn google_error(status: StatusCode, code_name: &str, message: &str) -> Result<Response<Full<Bytes>>, Infallible> {
    json(status, serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": code_name}}))
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let (authorization, metadata_flavor, content_type) = (header("authorization"), header("metadata-flavor"), header("content-type"));
    let body = String::from_utf8_lossy(&req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default()).into_owned();
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        metadata_flavor: metadata_flavor.clone(),
        content_type: content_type.clone(),
        body: body.clone(),
    });

    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if metadata_flavor.as_deref() != Some("Google") {
            return Ok(Response::builder().status(403).body(Full::new(Bytes::from("Missing required header: Metadata-Flavor"))).unwrap());
        }
        return json(StatusCode::OK, serde_json::json!({"access_token": METADATA_TOKEN, "expires_in": 3599, "token_type": "Bearer"}));
    }
    if path == "/token" && method == "POST" {
        return token_grant(&state, &body);
    }

    // Google APIs: bearer token first, then the switchable failure, then the real answer.
    state.api_calls.fetch_add(1, Ordering::SeqCst);
    let bearer_ok = matches!(authorization.as_deref(), Some(a) if a == format!("Bearer {METADATA_TOKEN}") || a == format!("Bearer {KEY_FILE_TOKEN}"));
    if !bearer_ok {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.");
    }
    match state.mode.load(Ordering::SeqCst) {
        1 => return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Secret [projects/123456/secrets/missing] not found or has no versions."),
        2 => {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            )
        }
        3 => return google_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Access requests'."),
        4 => return google_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "The service is currently unavailable."),
        5 => {
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(r#"{"accessToken": "ya29.trunc"#)))
                .unwrap())
        }
        _ => {}
    }
    if method == "GET" && path.starts_with("/v1/projects/") && path.ends_with(":access") {
        let resource = path.trim_start_matches("/v1/").trim_end_matches(":access");
        let parts: Vec<&str> = resource.split('/').collect();
        if parts.len() != 6 || parts[2] != "secrets" || parts[4] != "versions" || parts[3] != "vendor-token" {
            return google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Secret [projects/123456/secrets/{}] not found or has no versions.", parts.get(3).unwrap_or(&"")),
            );
        }
        let version = if parts[5] == "latest" { "3" } else { parts[5] };
        let data = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
        return json(
            StatusCode::OK,
            serde_json::json!({"name": format!("projects/123456/secrets/vendor-token/versions/{version}"), "payload": {"data": data}}),
        );
    }
    if method == "POST" && path.starts_with("/v1/projects/-/serviceAccounts/") && path.ends_with(":generateAccessToken") {
        if content_type.as_deref().is_none_or(|c| !c.starts_with("application/json")) {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        }
        let Ok(req) = serde_json::from_str::<serde_json::Value>(&body) else {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let scopes_ok = req["scope"].as_array().is_some_and(|s| !s.is_empty() && s.iter().all(|v| v.is_string()));
        let lifetime = req["lifetime"].as_str().and_then(|l| l.strip_suffix('s')).and_then(|n| n.parse::<u64>().ok());
        let (true, Some(lifetime)) = (scopes_ok, lifetime) else {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Invalid value at 'scope' or 'lifetime'.");
        };
        if lifetime > 3600 {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "The lifetime requested is greater than the maximum allowed.");
        }
        let token = format!("ya29.c.minted-{}", uuid::Uuid::new_v4().simple());
        state.issued.lock().unwrap().push(token.clone());
        let expire = time::OffsetDateTime::now_utc() + time::Duration::seconds(lifetime as i64);
        let expire = expire.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
        return json(StatusCode::OK, serde_json::json!({"accessToken": token, "expireTime": expire}));
    }
    google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested URL was not found on this server.")
}

/// The JWT bearer grant: checks the assertion's RS256 signature against the key file's public key
/// and its claims, as Google's token endpoint does.
fn token_grant(state: &State, body: &str) -> Result<Response<Full<Bytes>>, Infallible> {
    let form: std::collections::BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let invalid = |why: &str| json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_grant", "error_description": why}));
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "unsupported_grant_type"}));
    }
    let Some(assertion) = form.get("assertion") else { return invalid("missing assertion") };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return invalid("malformed assertion");
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Ok(header), Ok(claims), Ok(signature)) = (b64.decode(parts[0]), b64.decode(parts[1]), b64.decode(parts[2])) else {
        return invalid("malformed assertion");
    };
    let key = state.public_key.lock().unwrap().clone();
    let signed = format!("{}.{}", parts[0], parts[1]);
    if ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key).verify(signed.as_bytes(), &signature).is_err() {
        return invalid("Invalid JWT Signature.");
    }
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let ok = header["alg"] == "RS256"
        && header["kid"] == "test-key-1"
        && claims["iss"] == KEY_EMAIL
        && claims["scope"] == CLOUD_PLATFORM
        && claims["aud"].as_str() == Some(state.token_uri.lock().unwrap().as_str())
        && iat.abs_diff(now) < 60
        && exp > iat
        && exp - iat <= 3600;
    if !ok {
        return invalid(&format!("Invalid JWT: bad header or claims {header} {claims}"));
    }
    json(StatusCode::OK, serde_json::json!({"access_token": KEY_FILE_TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
}

/// A fresh 2048-bit RSA key (openssl, as `gcloud iam service-accounts keys create` would make
/// one) in a key file of Google's format; the server gets the public half.
fn write_key_file(dir: &Path, fake: &FakeGoogle) -> std::path::PathBuf {
    let pem = dir.join("sa-key.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl is needed for this test (apt-get install -y openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
    let der = dir.join("sa-pub.der");
    run(&["rsa", "-in", pem.to_str().unwrap(), "-RSAPublicKey_out", "-outform", "DER", "-out", der.to_str().unwrap()]);
    *fake.state.public_key.lock().unwrap() = std::fs::read(&der).unwrap();
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "test-key-1",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": KEY_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": fake.state.token_uri.lock().unwrap().clone(),
    });
    let path = dir.join("sa-key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn client(ca: &TestCa) -> credential_broker::upstream::HttpClient {
    let tls = credential_broker::upstream::client_tls_config(Some(&ca.cert_path)).unwrap();
    credential_broker::upstream::build_client(tls, credential_broker::upstream::ConnectTo::new(Vec::new(), Duration::from_secs(5)))
}

fn request(provider: &dyn CredentialProvider, method: &str, ttl: Duration) -> MintRequest {
    let scope = Scope::single("http", None, format!("http:{method}"), "https://storage.googleapis.com/storage/v1/b/bucket-a/o");
    MintRequest {
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: Default::default() },
        credential_scope: provider.credential_scope(&scope, method),
        scope,
        ttl,
        request_id: "req-1".into(),
    }
}

fn token(lease: &Lease) -> &str {
    match &lease.credential {
        Credential::Token(t) => t.expose(),
        other => panic!("expected a token, got {other:?}"),
    }
}

fn retries() -> RetryConfig {
    RetryConfig { max_retries: 3, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) }
}

fn secret_settings(fake: &FakeGoogle, secret: &str, version: &str, identity: GcpIdentity) -> GcpSecretManagerSettings {
    GcpSecretManagerSettings {
        project: "demo-project".into(),
        secret: secret.into(),
        version: version.into(),
        ttl: Duration::from_secs(300),
        identity,
        endpoint_url: fake.url(),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_access_with_the_metadata_identity_and_each_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeGoogle::start(&ca).await;
    let metadata = GcpIdentity::Metadata { base_url: fake.url() };
    let p =
        GcpSecretManagerProvider::new("gsm", secret_settings(&fake, "vendor-token", "latest", metadata.clone()), client(&ca), Duration::from_secs(5)).unwrap();
    let req = request(&p, "GET", Duration::from_secs(600));
    assert_eq!(req.credential_scope, "gcp-secret:projects/demo-project/secrets/vendor-token/versions/latest");

    let lease = p.mint(&req).await.unwrap();
    assert_eq!(token(&lease), SECRET_VALUE);
    assert_eq!(lease.details["secret_version"], "projects/123456/secrets/vendor-token/versions/3");
    let md = fake.seen("/computeMetadata/");
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].metadata_flavor.as_deref(), Some("Google"));
    let access = fake.seen(":access");
    assert_eq!((access[0].method.as_str(), access[0].path.as_str()), ("GET", "/v1/projects/demo-project/secrets/vendor-token/versions/latest:access"));
    assert_eq!(access[0].authorization.as_deref(), Some(format!("Bearer {METADATA_TOKEN}").as_str()));
    // The base token is cached: a second mint asks the metadata server nothing.
    p.mint(&req).await.unwrap();
    assert_eq!(fake.seen("/computeMetadata/").len(), 1);

    // A pinned version, and a secret that does not exist.
    let pinned =
        GcpSecretManagerProvider::new("gsm", secret_settings(&fake, "vendor-token", "2", metadata.clone()), client(&ca), Duration::from_secs(5)).unwrap();
    assert_eq!(pinned.mint(&req).await.unwrap().details["secret_version"], "projects/123456/secrets/vendor-token/versions/2");
    let missing = GcpSecretManagerProvider::new("gsm", secret_settings(&fake, "missing", "latest", metadata), client(&ca), Duration::from_secs(5)).unwrap();
    let e = missing.mint(&req).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("HTTP 404 NOT_FOUND") && e.message.contains("secrets/missing"), "{}", e.message);

    // 403, 404: permanent, one attempt. 429, 503: retried, then the broker gives up.
    for (mode, retryable, text) in [
        (Mode::Denied, false, "403 PERMISSION_DENIED"),
        (Mode::NotFound, false, "404 NOT_FOUND"),
        (Mode::Throttled, true, "429 RESOURCE_EXHAUSTED"),
        (Mode::Unavailable, true, "503 UNAVAILABLE"),
    ] {
        fake.set_mode(mode);
        let before = fake.api_calls();
        let failure = with_retries(&retries(), |_| p.mint(&req)).await.unwrap_err();
        let attempts = if retryable { 4 } else { 1 };
        assert_eq!((failure.attempts, fake.api_calls() - before), (attempts, attempts), "{mode:?}");
        assert_eq!(failure.last_error.retryable, retryable, "{mode:?}");
        assert!(failure.last_error.message.contains(text), "{mode:?}: {}", failure.last_error.message);
    }
    fake.set_mode(Mode::Malformed);
    let e = p.mint(&req).await.unwrap_err();
    assert!(e.message.contains("malformed JSON") && !e.message.contains("ya29"), "{}", e.message);
    fake.set_mode(Mode::Ok);
    assert_eq!(token(&p.mint(&req).await.unwrap()), SECRET_VALUE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_access_token_with_a_key_file_identity_minimal_scopes_and_policy_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeGoogle::start(&ca).await;
    let key_file = write_key_file(dir.path(), &fake);
    let settings = GcpAccessTokenSettings {
        service_account: SERVICE_ACCOUNT.into(),
        scopes: vec![READ_ONLY.into()],
        scopes_by_method: [("PUT".to_string(), vec![READ_WRITE.to_string()])].into(),
        identity: GcpIdentity::KeyFile { path: key_file.clone() },
        endpoint_url: fake.url(),
        timeout: Duration::from_secs(5),
    };
    let p = GcpAccessTokenProvider::new("gat", settings.clone(), client(&ca), Duration::from_secs(5)).unwrap();

    let get = request(&p, "GET", Duration::from_secs(300));
    assert_eq!(get.credential_scope, READ_ONLY);
    let lease = p.mint(&get).await.unwrap();
    assert!(token(&lease).starts_with("ya29.c.minted-"));
    let left = lease.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(290), "{left:?}");
    // The grant was signed with the key (the server verified the RS256 signature and claims).
    let grants = fake.seen("/token");
    assert_eq!(grants.len(), 1);
    assert!(grants[0].body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"));
    let calls = fake.seen(":generateAccessToken");
    assert_eq!(calls[0].path, format!("/v1/projects/-/serviceAccounts/{}:generateAccessToken", SERVICE_ACCOUNT.replace('@', "%40")));
    assert_eq!(calls[0].authorization.as_deref(), Some(format!("Bearer {KEY_FILE_TOKEN}").as_str()));
    assert!(calls[0].content_type.as_deref().unwrap().starts_with("application/json"));
    let body: serde_json::Value = serde_json::from_str(&calls[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"scope": [READ_ONLY], "lifetime": "300s"}));

    // A write asks for the write scope too; a long policy TTL is capped at 3600 s.
    let put = request(&p, "PUT", Duration::from_secs(7200));
    p.mint(&put).await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&fake.seen(":generateAccessToken")[1].body).unwrap();
    assert_eq!(body, serde_json::json!({"scope": [READ_ONLY, READ_WRITE], "lifetime": "3600s"}));

    // A key file others can read is refused at start-up.
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let e = GcpAccessTokenProvider::new("gat", settings, client(&ca), Duration::from_secs(5)).err().unwrap();
    assert!(e.to_string().contains("chmod 600"), "{e}");

    fake.set_mode(Mode::Denied);
    let e = p.mint(&get).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("PERMISSION_DENIED") && e.message.contains(SERVICE_ACCOUNT), "{}", e.message);
    fake.set_mode(Mode::Malformed);
    let e = p.mint(&get).await.unwrap_err();
    assert!(e.message.starts_with(&format!("IAM Credentials generateAccessToken for {SERVICE_ACCOUNT}: the answer is malformed JSON")), "{}", e.message);
}

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may use the bucket", "ttl_seconds": 600} if {
    input.scope.action in {"http:GET", "http:PUT"}
    startswith(input.scope.resource, "https://storage.googleapis.com/storage/v1/b/bucket-a/")
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_injects_google_tokens_and_fails_closed_with_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeGoogle::start(&ca).await;
    let upstream = HttpsUpstream::start(&ca, &["storage.googleapis.com"]).await;
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: gcs
    hosts: [storage.googleapis.com]
    connect_to: "{upstream}"
    provider: google
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: credential-broker-placeholder}}}}
providers:
  google:
    type: gcp_access_token
    service_account: {SERVICE_ACCOUNT}
    scopes: ["{READ_ONLY}"]
    scopes_by_method: {{PUT: ["{READ_WRITE}"]}}
    metadata_url: "{google}"
    endpoint_url: "{google}"
policy: {{file: {dir}/policy.rego}}
credentials: {{retry: {{max_retries: 3, base_delay_ms: 10, max_delay_ms: 50}}}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.path().display(),
        upstream_ca = ca.cert_path.display(),
        upstream = upstream.addr,
        google = fake.url().as_str().trim_end_matches('/'),
    );
    let broker = Broker::start(dir.path(), &yaml, &[]);
    let url = "https://storage.googleapis.com/storage/v1/b/bucket-a/o/report.csv";
    let auth = "Authorization: Bearer credential-broker-placeholder";
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-H", auth], url);
    assert_eq!(status, 200, "{body}\n{}", broker.log());
    let issued = fake.state.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1);
    assert_eq!(upstream.requests()[0].authorization.as_deref(), Some(format!("Bearer {}", issued[0]).as_str()));

    // Google goes down: a PUT needs a new token (another scope), 1 + 3 attempts, then 503 and the alert.
    fake.set_mode(Mode::Unavailable);
    let before = fake.api_calls();
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-X", "PUT", "-H", auth, "--data", "x"], url);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("credential_minting_failed"), "{body}");
    assert_eq!(fake.api_calls() - before, 4);
    assert!(broker.wait_for_log("Credential Minting Failure", Duration::from_secs(5)), "{}", broker.log());
    assert_eq!(upstream.requests().len(), 1, "a request went upstream without its credential");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let issue: serde_json::Value = audit.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| r["event"] == "issue").unwrap();
    assert_eq!(issue["provider"], "google");
    assert_eq!(issue["credential_scope"], READ_ONLY);
    assert_eq!(issue["details"]["service_account"], SERVICE_ACCOUNT);
    let written = format!("{audit}{}", broker.log());
    for secret in issued.iter().map(String::as_str).chain([METADATA_TOKEN]) {
        assert!(!written.contains(secret), "a token leaked into the broker's log or audit");
    }
}

fn config_problems(provider_yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        "identity: {{agent_id: a, tenant: t}}\npolicy: {{file: policy.rego}}\naudit: {{path: audit.jsonl}}\nroutes:\n  - name: r\n    hosts: [storage.googleapis.com]\n    provider: p\n    inject: {{header: {{name: Authorization, format: \"Bearer {{secret}}\", placeholder: credential-broker-placeholder}}}}\nproviders:\n  p:\n{provider_yaml}"
    );
    match credential_broker::config::Config::from_yaml(&yaml, dir.path(), &|_| None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn google_config_validation_names_the_key_path() {
    assert!(config_problems("    type: gcp_secret_manager\n    project: demo-project\n    secret: vendor-token\n").is_empty());
    assert!(config_problems(&format!("    type: gcp_access_token\n    service_account: {SERVICE_ACCOUNT}\n    scopes: [\"{READ_ONLY}\"]\n")).is_empty());
    let missing = config_problems("    type: gcp_access_token\n    scopes: [x]\n");
    assert!(missing.len() == 1 && missing[0].starts_with("providers.p") && missing[0].contains("missing field `service_account`"), "{missing:?}");
    let bad = config_problems(
        "    type: gcp_access_token\n    service_account: nobody\n    credentials_file: k.json\n    metadata_url: http://169.254.169.254\n    endpoint_url: http://10.1.2.3\n",
    );
    for expected in [
        "providers.p.service_account: \"nobody\" is not a service account",
        "providers.p.scopes: at least one OAuth scope is required",
        "providers.p.credentials_file: set either credentials_file or metadata_url",
        "providers.p.endpoint_url: \"http://10.1.2.3\" must be an https URL",
    ] {
        assert!(bad.iter().any(|p| p.starts_with(expected)), "no problem starting {expected:?} in {bad:#?}");
    }
    let bad = config_problems("    type: gcp_secret_manager\n    project: \"demo project\"\n    secret: \"a/b\"\n    version: newest\n    ttl_seconds: 0\n");
    for expected in ["providers.p.project:", "providers.p.secret:", "providers.p.version: \"newest\" is not `latest`", "providers.p.ttl_seconds:"] {
        assert!(bad.iter().any(|p| p.starts_with(expected)), "no problem starting {expected:?} in {bad:#?}");
    }
}
