//! Azure providers against a local server. No Azure endpoint is reachable here, so [`FakeAzure`]
//! follows Microsoft's public REST reference as written, not captured traffic:
//! - Entra ID v2.0 token endpoint `POST /{tenant}/oauth2/v2.0/token`, client-credentials grant
//!   with a federated client assertion (`client_assertion_type=
//!   urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `scope={resource}/.default`),
//!   answering `{token_type, expires_in (number), ext_expires_in, access_token}`; errors in the
//!   OAuth form `{"error": "invalid_client", "error_description": "AADSTS…: … Trace ID: …",
//!   "error_codes": […]}`;
//! - IMDS `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…[&client_id=…]`
//!   over plain HTTP, refused without `Metadata: true`, answering `expires_in` as a string;
//! - Key Vault `GET /secrets/{name}[/{version}]?api-version=7.4` and `PUT /secrets/{name}`
//!   (`{"value": …}`), answering a `SecretBundle` `{value, id, attributes}`; a missing bearer
//!   token gets 401 with `WWW-Authenticate: Bearer authorization=…, resource=…`; errors in Key
//!   Vault's model `{"error": {"code", "message", "innererror"}}`: 401 Unauthorized, 403 Forbidden
//!   (ForbiddenByRbac), 404 SecretNotFound, 429 Throttled with `Retry-After`, 503.
//!
//! The server checks what the broker sends (api-version, bearer token and its audience, the
//! client assertion, scope, resource, the Metadata header); the tests check what the broker does
//! with each answer.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use credential_broker::classify::Scope;
use credential_broker::config::{AzureAccessTokenSettings, AzureIdentity, AzureKeyVaultSettings, AzureSecretGenerator, RetryConfig};
use credential_broker::providers::azure::{AzureAccessTokenProvider, AzureKeyVaultProvider};
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

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0c5e2b3a-4d1f-4e6a-9b7c-8d9e0f1a2b3c";
const MI_CLIENT_ID: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const SECRET_NAME: &str = "vendor-token";
const SECRET_V1: &str = "vendor-secret-from-key-vault-7c1d9e";
const VERSION_V1: &str = "4387e9f3d6e14c459867679a90fd0f79";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const ARM_SCOPE: &str = "https://management.azure.com/.default";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Ok = 0,
    Unauthorized = 1,
    Forbidden = 2,
    NotFound = 3,
    Throttled = 4,
    ThrottledOnce = 5,
    Unavailable = 6,
    Malformed = 7,
}

impl Mode {
    fn from(v: u8) -> Mode {
        [Mode::Ok, Mode::Unauthorized, Mode::Forbidden, Mode::NotFound, Mode::Throttled, Mode::ThrottledOnce, Mode::Unavailable, Mode::Malformed][v as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Entra,
    Imds,
    KeyVault,
}

#[derive(Debug, Clone)]
struct Seen {
    service: Service,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    metadata: Option<String>,
    content_type: Option<String>,
    body: String,
    at: Instant,
}

impl Seen {
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn form(&self) -> std::collections::BTreeMap<String, String> {
        url::form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }
}

#[derive(Default)]
struct State {
    modes: [AtomicU8; 3],
    calls: [AtomicU32; 3],
    seen: Mutex<Vec<Seen>>,
    /// Tokens handed out, with the audience (resource) each is for.
    issued: Mutex<Vec<(String, String)>>,
    /// The secret's versions, oldest first: (version, value).
    versions: Mutex<Vec<(String, String)>>,
    /// The projected token the federated identity credential accepts.
    assertion: Mutex<String>,
}

struct FakeAzure {
    /// HTTPS: Entra ID and Key Vault.
    addr: SocketAddr,
    /// Plain HTTP: IMDS.
    imds_addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeAzure {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl FakeAzure {
    async fn start(ca: &TestCa) -> FakeAzure {
        let state = Arc::new(State::default());
        state.versions.lock().unwrap().push((VERSION_V1.into(), SECRET_V1.into()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let st = state.clone();
        let https = tokio::spawn(async move {
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
        let imds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let imds_addr = imds.local_addr().unwrap();
        let st = state.clone();
        let http = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = imds.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        FakeAzure { addr, imds_addr, state, tasks: vec![https, http] }
    }

    fn url(&self) -> url::Url {
        format!("https://localhost:{}", self.addr.port()).parse().unwrap()
    }

    fn imds_url(&self) -> url::Url {
        format!("http://{}", self.imds_addr).parse().unwrap()
    }

    fn set_mode(&self, service: Service, mode: Mode) {
        self.state.modes[service as usize].store(mode as u8, Ordering::SeqCst);
    }

    fn calls(&self, service: Service) -> u32 {
        self.state.calls[service as usize].load(Ordering::SeqCst)
    }

    fn seen(&self, service: Service) -> Vec<Seen> {
        self.state.seen.lock().unwrap().iter().filter(|s| s.service == service).cloned().collect()
    }

    fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder().status(status).header("content-type", "application/json; charset=utf-8").body(Full::new(Bytes::from(body.to_string()))).unwrap())
}

fn with_retry_after(resp: Result<Response<Full<Bytes>>, Infallible>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = resp.unwrap();
    resp.headers_mut().insert("retry-after", "1".parse().unwrap());
    Ok(resp)
}

fn vault_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = serde_json::json!({"code": inner});
    }
    json(status, serde_json::json!({"error": error}))
}

/// Entra ID and IMDS share the OAuth error shape.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Result<Response<Full<Bytes>>, Infallible> {
    let code: u64 = description.strip_prefix("AADSTS").and_then(|d| d.split(':').next()).and_then(|c| c.parse().ok()).unwrap_or(0);
    json(
        status,
        serde_json::json!({
            "error": error,
            "error_description": format!("{description} Trace ID: 5f1e2d3c-0000-4000-8000-000000000001 Correlation ID: 1a2b3c4d-0000-4000-8000-000000000002 Timestamp: 2024-05-01 10:00:00Z"),
            "error_codes": [code],
            "timestamp": "2024-05-01 10:00:00Z",
        }),
    )
}

fn malformed() -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder().status(200).header("content-type", "application/json").body(Full::new(Bytes::from(r#"{"value": "vendor-secret-trunc"#))).unwrap())
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let (authorization, metadata, content_type) = (header("authorization"), header("metadata"), header("content-type"));
    let body = String::from_utf8_lossy(&req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default()).into_owned();
    let service = if path.starts_with("/metadata/") {
        Service::Imds
    } else if path.ends_with("/oauth2/v2.0/token") {
        Service::Entra
    } else {
        Service::KeyVault
    };
    let seen = Seen { service, method, path, query, authorization, metadata, content_type, body, at: Instant::now() };
    state.seen.lock().unwrap().push(seen.clone());
    state.calls[service as usize].fetch_add(1, Ordering::SeqCst);
    let mode = &state.modes[service as usize];
    let current = Mode::from(mode.load(Ordering::SeqCst));
    if current == Mode::ThrottledOnce {
        mode.store(Mode::Ok as u8, Ordering::SeqCst);
    }
    match service {
        Service::Entra => entra(&state, &seen, current),
        Service::Imds => imds(&state, &seen, current),
        Service::KeyVault => key_vault(&state, &seen, current),
    }
}

fn issue(state: &State, audience: &str) -> String {
    let token = format!("eyJ0eXAiOiJKV1QifQ.{}-{}.sig", audience.trim_start_matches("https://").replace(['/', '.'], "_"), uuid::Uuid::new_v4().simple());
    state.issued.lock().unwrap().push((token.clone(), audience.to_string()));
    token
}

/// The v2.0 token endpoint with a federated identity credential: the assertion must be the
/// projected token, whose audience is `api://AzureADTokenExchange`.
fn entra(state: &State, seen: &Seen, mode: Mode) -> Result<Response<Full<Bytes>>, Infallible> {
    if seen.method != "POST" || seen.path != format!("/{TENANT}/oauth2/v2.0/token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{}' not found.", seen.path.split('/').nth(1).unwrap_or("")),
        );
    }
    if seen.content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'grant_type'.");
    }
    let form = seen.form();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" || field("client_id") != CLIENT_ID {
        return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "AADSTS700016: Application not found in the directory.");
    }
    if field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS50027: Invalid client_assertion_type.");
    }
    let assertion = field("client_assertion");
    let claims = assertion
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    if assertion != *state.assertion.lock().unwrap() || claims["aud"][0] != "api://AzureADTokenExchange" {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:agents:credential-broker'.",
        );
    }
    let scope = field("scope");
    if !scope.ends_with("/.default") || scope.contains(' ') {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.");
    }
    match mode {
        Mode::Unauthorized => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "AADSTS7000215: Invalid client secret provided."),
        Mode::Forbidden => {
            return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", &format!("AADSTS7000112: Application '{CLIENT_ID}' is disabled."))
        }
        Mode::NotFound => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("AADSTS90002: Tenant '{TENANT}' not found.")),
        Mode::Throttled | Mode::ThrottledOnce => {
            return with_retry_after(oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "AADSTS50196: The server terminated an operation because it encountered a client request loop.",
            ))
        }
        Mode::Unavailable => return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "AADSTS90033: A transient error has occurred."),
        Mode::Malformed => return malformed(),
        Mode::Ok => {}
    }
    let audience = scope.trim_end_matches("/.default");
    let token = issue(state, audience);
    json(StatusCode::OK, serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
}

fn imds(state: &State, seen: &Seen, mode: Mode) -> Result<Response<Full<Bytes>>, Infallible> {
    if seen.metadata.as_deref() != Some("true") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified");
    }
    if seen.path != "/metadata/identity/oauth2/token" || seen.query("api-version") != Some("2018-02-01") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid or missing api-version");
    }
    let Some(resource) = seen.query("resource") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Required audience parameter not specified");
    };
    if seen.query("client_id").is_some_and(|id| id != MI_CLIENT_ID) || mode == Mode::NotFound {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Identity not found");
    }
    match mode {
        Mode::Throttled | Mode::ThrottledOnce => return with_retry_after(oauth_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests")),
        Mode::Unavailable => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "unknown_error", "An unexpected error occurred"),
        Mode::Malformed => return malformed(),
        Mode::Unauthorized | Mode::Forbidden => return oauth_error(StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        Mode::Ok | Mode::NotFound => {}
    }
    let token = issue(state, resource);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    json(
        StatusCode::OK,
        serde_json::json!({"access_token": token, "refresh_token": "", "expires_in": "3599", "expires_on": (now + 3599).to_string(),
                          "not_before": now.to_string(), "resource": resource, "token_type": "Bearer"}),
    )
}

fn key_vault(state: &State, seen: &Seen, mode: Mode) -> Result<Response<Full<Bytes>>, Infallible> {
    if seen.query("api-version") != Some("7.4") {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The request URI contains an invalid or missing api-version.", None);
    }
    let bearer = seen.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
    let audience = bearer.and_then(|t| state.issued.lock().unwrap().iter().find(|(i, _)| i == t).map(|(_, a)| a.clone()));
    if audience.as_deref() != Some("https://vault.azure.net") || mode == Mode::Unauthorized {
        let mut resp = vault_error(StatusCode::UNAUTHORIZED, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", None).unwrap();
        let challenge = format!("Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\"");
        resp.headers_mut().insert("www-authenticate", challenge.parse().unwrap());
        return Ok(resp);
    }
    match mode {
        Mode::Forbidden => {
            return vault_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                Some("ForbiddenByRbac"),
            )
        }
        Mode::NotFound => {
            return vault_error(StatusCode::NOT_FOUND, "SecretNotFound", "A secret with (name/id) vendor-token was not found in this key vault.", None)
        }
        Mode::Throttled | Mode::ThrottledOnce => {
            return with_retry_after(vault_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                None,
            ))
        }
        Mode::Unavailable => return vault_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "The service is temporarily unavailable.", None),
        Mode::Malformed => return malformed(),
        Mode::Ok | Mode::Unauthorized => {}
    }
    let parts: Vec<&str> = seen.path.trim_start_matches('/').trim_end_matches('/').split('/').collect();
    if parts.first() != Some(&"secrets") || parts.get(1) != Some(&SECRET_NAME) || parts.len() > 3 {
        let name = parts.get(1).copied().unwrap_or("");
        return vault_error(StatusCode::NOT_FOUND, "SecretNotFound", &format!("A secret with (name/id) {name} was not found in this key vault."), None);
    }
    let base = format!("https://localhost/secrets/{SECRET_NAME}");
    let bundle = |version: &str, value: &str| {
        serde_json::json!({"value": value, "id": format!("{base}/{version}"), "contentType": "text/plain",
                          "attributes": {"enabled": true, "created": 1_700_000_000u64, "updated": 1_700_000_000u64, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}})
    };
    match (seen.method.as_str(), parts.get(2)) {
        ("GET", version) => {
            let versions = state.versions.lock().unwrap();
            let found = match version {
                Some(v) => versions.iter().find(|(id, _)| id == v),
                None => versions.last(),
            };
            match found {
                Some((id, value)) => json(StatusCode::OK, bundle(id, value)),
                None => {
                    vault_error(StatusCode::NOT_FOUND, "SecretNotFound", "A secret with (name/id) vendor-token/version was not found in this key vault.", None)
                }
            }
        }
        ("PUT", None) => {
            let Some(value) = serde_json::from_str::<serde_json::Value>(&seen.body).ok().and_then(|v| v["value"].as_str().map(str::to_string)) else {
                return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "Property value is required.", None);
            };
            let version = uuid::Uuid::new_v4().simple().to_string();
            state.versions.lock().unwrap().push((version.clone(), value.clone()));
            json(StatusCode::OK, bundle(&version, &value))
        }
        _ => vault_error(StatusCode::METHOD_NOT_ALLOWED, "BadParameter", "The method is not allowed.", None),
    }
}

/// A projected service-account token as the kubelet writes it for AKS workload identity: a
/// JWT whose audience is `api://AzureADTokenExchange` (the fake does not check its signature).
fn write_projected_token(path: &Path, fake: &FakeAzure, subject: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let header = b64.encode(r#"{"alg":"RS256","kid":"aks-1"}"#);
    let claims = serde_json::json!({"aud": ["api://AzureADTokenExchange"], "iss": "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/",
                                   "sub": subject, "iat": now, "exp": now + 3600});
    let token = format!("{header}.{}.{}", b64.encode(claims.to_string()), b64.encode(uuid::Uuid::new_v4().as_bytes()));
    std::fs::write(path, format!("{token}\n")).unwrap();
    *fake.state.assertion.lock().unwrap() = token.clone();
    token
}

fn workload_identity(fake: &FakeAzure, token_file: &Path) -> AzureIdentity {
    AzureIdentity::WorkloadIdentity { authority_host: fake.url(), tenant_id: TENANT.into(), client_id: CLIENT_ID.into(), token_file: token_file.to_path_buf() }
}

fn vault_settings(fake: &FakeAzure, secret: &str, version: Option<&str>, identity: AzureIdentity) -> AzureKeyVaultSettings {
    AzureKeyVaultSettings {
        vault_url: fake.url(),
        secret: secret.into(),
        version: version.map(str::to_string),
        ttl: Duration::from_secs(300),
        rotation_generator: None,
        identity,
        timeout: Duration::from_secs(5),
    }
}

fn client(ca: &TestCa) -> credential_broker::upstream::HttpClient {
    let tls = credential_broker::upstream::client_tls_config(Some(&ca.cert_path)).unwrap();
    credential_broker::upstream::build_client(tls, credential_broker::upstream::ConnectTo::new(Vec::new(), Duration::from_secs(5)))
}

fn request(provider: &dyn CredentialProvider, ttl: Duration) -> MintRequest {
    let scope = Scope::single("http", None, "http:GET".to_string(), "https://management.azure.com/subscriptions");
    MintRequest {
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: Default::default() },
        credential_scope: provider.credential_scope(&scope, "GET"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_get_with_workload_identity_and_each_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeAzure::start(&ca).await;
    let token_file = dir.path().join("azure-identity-token");
    let assertion = write_projected_token(&token_file, &fake, "system:serviceaccount:agents:credential-broker");
    let p = AzureKeyVaultProvider::new("kv", vault_settings(&fake, SECRET_NAME, None, workload_identity(&fake, &token_file)), client(&ca)).unwrap();
    let req = request(&p, Duration::from_secs(600));
    assert_eq!(req.credential_scope, "azure-keyvault:localhost/secrets/vendor-token/latest");

    let lease = p.mint(&req).await.unwrap();
    assert_eq!(token(&lease), SECRET_V1);
    assert_eq!(lease.details["secret_id"], format!("https://localhost/secrets/{SECRET_NAME}/{VERSION_V1}"));
    let left = lease.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(290), "the provider's ttl caps the lease: {left:?}");
    // The grant: client credentials with the projected token as the client assertion, for Key Vault.
    let grants = fake.seen(Service::Entra);
    assert_eq!(grants.len(), 1);
    let form = grants[0].form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["scope"], VAULT_SCOPE);
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(form["client_assertion"], assertion);
    // The read: pinned api-version, latest version, the Key Vault token.
    let reads = fake.seen(Service::KeyVault);
    assert_eq!((reads[0].method.as_str(), reads[0].path.as_str(), reads[0].query("api-version")), ("GET", "/secrets/vendor-token", Some("7.4")));
    assert_eq!(reads[0].authorization.as_deref(), Some(format!("Bearer {}", fake.issued()[0]).as_str()));
    // The Key Vault token is cached: a second read asks Entra ID nothing.
    p.mint(&req).await.unwrap();
    assert_eq!(fake.seen(Service::Entra).len(), 1);

    // A pinned version, and a secret that does not exist.
    let pinned =
        AzureKeyVaultProvider::new("kv", vault_settings(&fake, SECRET_NAME, Some(VERSION_V1), workload_identity(&fake, &token_file)), client(&ca)).unwrap();
    assert_eq!(token(&pinned.mint(&req).await.unwrap()), SECRET_V1);
    assert_eq!(fake.seen(Service::KeyVault).last().unwrap().path, format!("/secrets/vendor-token/{VERSION_V1}"));
    let missing = AzureKeyVaultProvider::new("kv", vault_settings(&fake, "missing", None, workload_identity(&fake, &token_file)), client(&ca)).unwrap();
    let e = missing.mint(&req).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("HTTP 404 SecretNotFound") && e.message.contains("missing"), "{}", e.message);

    let grants_before = fake.seen(Service::Entra).len();
    // 401, 403, 404: permanent, one attempt. 429 and 503: retried, then the broker gives up.
    for (mode, retryable, text) in [
        (Mode::Unauthorized, false, "401 Unauthorized: AKV10000"),
        (Mode::Forbidden, false, "403 Forbidden (ForbiddenByRbac)"),
        (Mode::NotFound, false, "404 SecretNotFound"),
        (
            Mode::Throttled,
            true,
            "429 Throttled: Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached (Retry-After 1 s)",
        ),
        (Mode::Unavailable, true, "503 ServiceUnavailable"),
    ] {
        fake.set_mode(Service::KeyVault, mode);
        let before = fake.calls(Service::KeyVault);
        let started = Instant::now();
        let failure = with_retries(&retries(), |_| p.mint(&req)).await.unwrap_err();
        let attempts = if retryable { 4 } else { 1 };
        assert_eq!((failure.attempts, fake.calls(Service::KeyVault) - before), (attempts, attempts), "{mode:?}");
        assert_eq!(failure.last_error.retryable, retryable, "{mode:?}");
        assert!(failure.last_error.message.contains(text), "{mode:?}: {}", failure.last_error.message);
        if mode == Mode::Throttled {
            // Retry-After: 1 is honoured between attempts, not just the broker's 5-20 ms backoff.
            assert!(started.elapsed() >= Duration::from_millis(2900), "Retry-After ignored: {:?}", started.elapsed());
        }
    }
    // The 401 dropped the cached Key Vault token, so a new one was asked for.
    assert_eq!(fake.seen(Service::Entra).len(), grants_before + 1);

    // One 429 with Retry-After: 1, then the value; the second call waited the second out.
    fake.set_mode(Service::KeyVault, Mode::ThrottledOnce);
    let before = fake.seen(Service::KeyVault).len();
    let lease = with_retries(&retries(), |_| p.mint(&req)).await.unwrap();
    assert_eq!(token(&lease), SECRET_V1);
    let calls = &fake.seen(Service::KeyVault)[before..];
    assert_eq!(calls.len(), 2);
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_millis(950), "{:?}", calls[1].at.duration_since(calls[0].at));

    fake.set_mode(Service::KeyVault, Mode::Malformed);
    let e = p.mint(&req).await.unwrap_err();
    assert!(e.message.starts_with("Key Vault get secret vendor-token: the answer is malformed JSON (Eof error"), "{}", e.message);
    assert!(!e.message.contains("vendor-secret"), "{}", e.message);

    // Entra ID refusing the federated credential is permanent and names the AADSTS code only.
    fake.set_mode(Service::KeyVault, Mode::Ok);
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c3RhbGU\n").unwrap();
    let fresh = AzureKeyVaultProvider::new("kv", vault_settings(&fake, SECRET_NAME, None, workload_identity(&fake, &token_file)), client(&ca)).unwrap();
    let e = fresh.mint(&req).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("HTTP 401 invalid_client: AADSTS700213: No matching federated identity record"), "{}", e.message);
    assert!(!e.message.contains("Trace ID") && !e.message.contains("eyJ"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_rotation_writes_a_generated_version_only_where_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeAzure::start(&ca).await;
    let token_file = dir.path().join("azure-identity-token");
    write_projected_token(&token_file, &fake, "system:serviceaccount:agents:credential-broker");
    let plain = AzureKeyVaultProvider::new("kv", vault_settings(&fake, SECRET_NAME, None, workload_identity(&fake, &token_file)), client(&ca)).unwrap();
    let e = plain.rotate("").await.unwrap_err();
    assert!(!e.retryable && e.message.contains("needs `rotation_generator`"), "{}", e.message);

    let settings = AzureKeyVaultSettings {
        rotation_generator: Some(AzureSecretGenerator::RandomBase64Url32),
        ..vault_settings(&fake, SECRET_NAME, None, workload_identity(&fake, &token_file))
    };
    let p = AzureKeyVaultProvider::new("kv", settings, client(&ca)).unwrap();
    let e = p.rotate("other-secret").await.unwrap_err();
    assert!(e.message.contains("not other-secret"), "{}", e.message);
    p.rotate(SECRET_NAME).await.unwrap();
    let put = fake.seen(Service::KeyVault).into_iter().find(|s| s.method == "PUT").unwrap();
    assert_eq!((put.path.as_str(), put.query("api-version")), ("/secrets/vendor-token", Some("7.4")));
    assert_eq!(put.content_type.as_deref(), Some("application/json"));
    let written: serde_json::Value = serde_json::from_str(&put.body).unwrap();
    let value = written["value"].as_str().unwrap();
    assert_eq!(value.len(), 43);
    assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{value}");
    // The new version is the latest: the next read serves it.
    let lease = p.mint(&request(&p, Duration::from_secs(600))).await.unwrap();
    assert_eq!(token(&lease), value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_from_managed_identity_and_workload_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeAzure::start(&ca).await;

    // IMDS, user-assigned identity.
    let imds = AzureIdentity::ManagedIdentity { endpoint: fake.imds_url(), client_id: Some(MI_CLIENT_ID.into()) };
    let settings = AzureAccessTokenSettings { scope: ARM_SCOPE.into(), identity: imds, timeout: Duration::from_secs(5) };
    let p = AzureAccessTokenProvider::new("arm", settings, client(&ca)).unwrap();
    let short = request(&p, Duration::from_secs(600));
    assert_eq!(short.credential_scope, ARM_SCOPE);
    let lease = p.mint(&short).await.unwrap();
    assert_eq!(token(&lease), fake.issued()[0]);
    let asked = &fake.seen(Service::Imds)[0];
    assert_eq!((asked.method.as_str(), asked.path.as_str()), ("GET", "/metadata/identity/oauth2/token"));
    assert_eq!(
        asked.query,
        vec![
            ("api-version".to_string(), "2018-02-01".to_string()),
            ("resource".to_string(), "https://management.azure.com".to_string()),
            ("client_id".to_string(), MI_CLIENT_ID.to_string())
        ]
    );
    assert_eq!(asked.metadata.as_deref(), Some("true"));
    // The lease lives as long as the shorter of the policy TTL and expires_in ("3599", a string at IMDS).
    let left = lease.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590), "{left:?}");
    assert_eq!(lease.details["expires_in_seconds"], "3599");
    assert_eq!(lease.details["identity"], format!("managed_identity client {MI_CLIENT_ID}"));
    let long = p.mint(&request(&p, Duration::from_secs(7200))).await.unwrap();
    let left = long.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(3599) && left > Duration::from_secs(3590), "{left:?}");

    for (mode, retryable, text) in [
        (Mode::NotFound, false, "400 invalid_request: Identity not found"),
        (Mode::Throttled, true, "429 too_many_requests"),
        (Mode::Unavailable, true, "500 unknown_error"),
    ] {
        fake.set_mode(Service::Imds, mode);
        let before = fake.calls(Service::Imds);
        let failure = with_retries(&retries(), |_| p.mint(&short)).await.unwrap_err();
        let attempts = if retryable { 4 } else { 1 };
        assert_eq!((failure.attempts, fake.calls(Service::Imds) - before), (attempts, attempts), "{mode:?}");
        assert!(failure.last_error.message.contains(text), "{mode:?}: {}", failure.last_error.message);
    }
    fake.set_mode(Service::Imds, Mode::Malformed);
    let e = p.mint(&short).await.unwrap_err();
    assert!(e.message.starts_with("IMDS managed identity token for https://management.azure.com: the answer is malformed JSON"), "{}", e.message);

    // Workload identity: the scope as configured, and the token file read again on each grant
    // (the kubelet rotates it).
    let token_file = dir.path().join("azure-identity-token");
    let first = write_projected_token(&token_file, &fake, "system:serviceaccount:agents:credential-broker");
    let settings = AzureAccessTokenSettings { scope: ARM_SCOPE.into(), identity: workload_identity(&fake, &token_file), timeout: Duration::from_secs(5) };
    let p = AzureAccessTokenProvider::new("arm", settings, client(&ca)).unwrap();
    let lease = p.mint(&short).await.unwrap();
    assert_eq!(&token(&lease), fake.issued().last().unwrap());
    let second = write_projected_token(&token_file, &fake, "system:serviceaccount:agents:credential-broker");
    p.mint(&short).await.unwrap();
    let grants = fake.seen(Service::Entra);
    assert_eq!((grants[0].form()["client_assertion"].as_str(), grants[1].form()["client_assertion"].as_str()), (first.as_str(), second.as_str()));
    assert_eq!(grants[1].form()["scope"], ARM_SCOPE);

    for (mode, retryable, text) in [
        (Mode::Unauthorized, false, "401 invalid_client: AADSTS7000215"),
        (Mode::Forbidden, false, "400 unauthorized_client: AADSTS7000112"),
        (Mode::Throttled, true, "429 temporarily_unavailable"),
        (Mode::Unavailable, true, "503 temporarily_unavailable: AADSTS90033"),
    ] {
        fake.set_mode(Service::Entra, mode);
        let before = fake.calls(Service::Entra);
        let failure = with_retries(&retries(), |_| p.mint(&short)).await.unwrap_err();
        let attempts = if retryable { 4 } else { 1 };
        assert_eq!((failure.attempts, fake.calls(Service::Entra) - before), (attempts, attempts), "{mode:?}");
        assert!(failure.last_error.message.contains(text), "{mode:?}: {}", failure.last_error.message);
    }
    fake.set_mode(Service::Entra, Mode::Malformed);
    let e = p.mint(&short).await.unwrap_err();
    assert!(e.message.contains("the answer is malformed JSON"), "{}", e.message);

    // A pod without the projected volume stops at start-up.
    let missing =
        AzureAccessTokenSettings { scope: ARM_SCOPE.into(), identity: workload_identity(&fake, &dir.path().join("absent")), timeout: Duration::from_secs(5) };
    let e = AzureAccessTokenProvider::new("arm", missing, client(&ca)).err().unwrap();
    assert!(e.to_string().contains("workload identity token file"), "{e}");
}

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may read", "ttl_seconds": 600} if {
    input.scope.action == "http:GET"
    some prefix in ["https://management.azure.com/subscriptions/", "https://api.vendor.example/v1/"]
    startswith(input.scope.resource, prefix)
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_injects_azure_credentials_and_fails_closed_with_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let fake = FakeAzure::start(&ca).await;
    let upstream = HttpsUpstream::start(&ca, &["management.azure.com", "api.vendor.example"]).await;
    let token_file = dir.path().join("azure-identity-token");
    let assertion = write_projected_token(&token_file, &fake, "system:serviceaccount:agents:credential-broker");
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: arm
    hosts: [management.azure.com]
    connect_to: "{upstream}"
    provider: arm
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: credential-broker-placeholder}}}}
  - name: vendor
    hosts: [api.vendor.example]
    connect_to: "{upstream}"
    provider: vault
    inject: {{header: {{name: Authorization, format: "Token {{secret}}", placeholder: credential-broker-placeholder}}}}
providers:
  arm:
    type: azure_access_token
    resource: https://management.azure.com
    identity: {{workload_identity: {{tenant_id: {TENANT}, client_id: {CLIENT_ID}, token_file: {token_file}, authority_host: "{azure}"}}}}
  vault:
    type: azure_key_vault
    vault_url: "{azure}"
    secret: {SECRET_NAME}
    identity: {{workload_identity: {{tenant_id: {TENANT}, client_id: {CLIENT_ID}, token_file: {token_file}, authority_host: "{azure}"}}}}
policy: {{file: {dir}/policy.rego}}
credentials: {{retry: {{max_retries: 3, base_delay_ms: 10, max_delay_ms: 50}}}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.path().display(),
        upstream_ca = ca.cert_path.display(),
        upstream = upstream.addr,
        token_file = token_file.display(),
        azure = fake.url().as_str().trim_end_matches('/'),
    );
    let broker = Broker::start(dir.path(), &yaml, &[]);
    let check = support::broker::cli(&["check-config", broker.config_path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let auth = "Authorization: Bearer credential-broker-placeholder";
    let vendor_auth = "Authorization: Token credential-broker-placeholder";

    // The Key Vault secret reaches the vendor; the client held only the placeholder.
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-H", vendor_auth], "https://api.vendor.example/v1/items");
    assert_eq!(status, 200, "{body}\n{}", broker.log());
    assert_eq!(upstream.requests()[0].authorization.as_deref(), Some(format!("Token {SECRET_V1}").as_str()));

    // Entra ID goes down before the first ARM request: 1 + 3 grants, then 503 and the alert.
    fake.set_mode(Service::Entra, Mode::Unavailable);
    let before = fake.calls(Service::Entra);
    let arm_url = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups?api-version=2021-04-01";
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-H", auth], arm_url);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("credential_minting_failed"), "{body}");
    assert_eq!(fake.calls(Service::Entra) - before, 4);
    assert!(broker.wait_for_log("Credential Minting Failure", Duration::from_secs(5)), "{}", broker.log());
    assert_eq!(upstream.requests().len(), 1, "a request went upstream without its credential");

    // Back up: the ARM token is injected as a bearer token.
    fake.set_mode(Service::Entra, Mode::Ok);
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &["-H", auth], arm_url);
    assert_eq!(status, 200, "{body}\n{}", broker.log());
    let arm_token = fake.state.issued.lock().unwrap().iter().find(|(_, a)| a == "https://management.azure.com").map(|(t, _)| t.clone()).unwrap();
    assert_eq!(upstream.requests()[1].authorization.as_deref(), Some(format!("Bearer {arm_token}").as_str()));

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let issues: Vec<serde_json::Value> =
        audit.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|r| r["event"] == "issue").collect();
    let arm = issues.iter().find(|r| r["provider"] == "arm").expect("an issue record for arm");
    assert_eq!(arm["credential_scope"], ARM_SCOPE);
    assert_eq!(arm["details"]["identity"], format!("workload_identity client {CLIENT_ID} tenant {TENANT}"));
    let vault = issues.iter().find(|r| r["provider"] == "vault").expect("an issue record for vault");
    assert!(vault["credential_scope"].as_str().unwrap().ends_with("/secrets/vendor-token/latest"), "{vault}");
    let written = format!("{audit}{}", broker.log());
    for secret in fake.issued().iter().map(String::as_str).chain([SECRET_V1, assertion.as_str()]) {
        assert!(!written.contains(secret), "a secret or token leaked into the broker's log or audit");
    }
}

fn config_problems(provider_yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = format!(
        "identity: {{agent_id: a, tenant: t}}\npolicy: {{file: policy.rego}}\naudit: {{path: audit.jsonl}}\nroutes:\n  - name: r\n    hosts: [management.azure.com]\n    provider: p\n    inject: {{header: {{name: Authorization, format: \"Bearer {{secret}}\", placeholder: credential-broker-placeholder}}}}\nproviders:\n  p:\n{provider_yaml}"
    );
    match credential_broker::config::Config::from_yaml(&yaml, dir.path(), &|_| None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn assert_problems(problems: &[String], expected: &[&str]) {
    for e in expected {
        assert!(problems.iter().any(|p| p.starts_with(e)), "no problem starting {e:?} in {problems:#?}");
    }
}

#[test]
fn azure_config_validation_names_the_key_path() {
    let wif = format!("    identity: {{workload_identity: {{tenant_id: {TENANT}, client_id: {CLIENT_ID}, token_file: /var/run/secrets/azure/tokens/azure-identity-token}}}}\n");
    let ok = config_problems(&format!("    type: azure_key_vault\n    vault_url: https://demo.vault.azure.net\n    secret: vendor-token\n{wif}"));
    assert!(ok.is_empty(), "{ok:?}");
    let ok = config_problems("    type: azure_access_token\n    scope: https://management.azure.com/.default\n    identity: {managed_identity: {}}\n");
    assert!(ok.is_empty(), "{ok:?}");

    let unknown = config_problems("    type: azure_blob\n");
    assert!(unknown.len() == 1 && unknown[0].starts_with("providers.p") && unknown[0].contains("unknown variant `azure_blob`"), "{unknown:?}");
    let missing = config_problems("    type: azure_key_vault\n    secret: x\n");
    assert!(missing.len() == 1 && missing[0].starts_with("providers.p") && missing[0].contains("missing field `vault_url`"), "{missing:?}");

    let bad = config_problems(
        "    type: azure_key_vault\n    vault_url: http://demo.vault.azure.net\n    secret: \"a/b\"\n    version: newest\n    ttl_seconds: 0\n    rotation_generator: uuid\n",
    );
    assert_problems(
        &bad,
        &[
            "providers.p.vault_url: \"http://demo.vault.azure.net\" must be an https URL",
            "providers.p.secret: \"a/b\" is not a Key Vault secret name",
            "providers.p.version: \"newest\" is not a Key Vault version",
            "providers.p.ttl_seconds:",
            "providers.p.rotation_generator: \"uuid\" is not one of random_base64url_32",
            "providers.p.identity: is required",
        ],
    );
    let bad = config_problems(&format!(
        "    type: azure_key_vault\n    vault_url: https://example.com\n    secret: s\n    version: {VERSION_V1}\n    rotation_generator: random_base64url_32\n{wif}"
    ));
    assert_problems(
        &bad,
        &["providers.p.vault_url: \"https://example.com/\" is not a Key Vault URL", "providers.p.rotation_generator: rotation adds a new version"],
    );

    let bad = config_problems(
        "    type: azure_access_token\n    scope: https://management.azure.com/user_impersonation\n    identity: {workload_identity: {tenant_id: common, client_id: app, token_file: t, authority_host: \"http://login.example.com\"}}\n",
    );
    assert_problems(
        &bad,
        &[
            "providers.p.scope: \"https://management.azure.com/user_impersonation\" is not RESOURCE/.default",
            "providers.p.identity.workload_identity.tenant_id: \"common\" is not a tenant id",
            "providers.p.identity.workload_identity.client_id: \"app\" is not an application (client) id",
            "providers.p.identity.workload_identity.authority_host: \"http://login.example.com\" must be an https URL",
        ],
    );
    let bad = config_problems(
        "    type: azure_access_token\n    scope: https://management.azure.com/.default\n    resource: https://management.azure.com\n    identity: {managed_identity: {client_id: x, endpoint: \"http://10.0.0.1\"}, workload_identity: {tenant_id: a.b, client_id: c, token_file: t}}\n",
    );
    assert_problems(
        &bad,
        &["providers.p.scope: set either scope or resource, not both", "providers.p.identity: set exactly one of workload_identity or managed_identity"],
    );
    let bad = config_problems("    type: azure_access_token\n    identity: {managed_identity: {endpoint: \"http://10.0.0.1\"}}\n");
    assert_problems(&bad, &["providers.p.scope: is required", "providers.p.identity.managed_identity.endpoint: \"http://10.0.0.1\" must be an https URL"]);
    // IMDS's own address is plain HTTP and allowed.
    let ok = config_problems(&format!("    type: azure_access_token\n    resource: https://management.azure.com/\n    identity: {{managed_identity: {{client_id: {MI_CLIENT_ID}, endpoint: \"http://169.254.169.254\"}}}}\n"));
    assert!(ok.is_empty(), "{ok:?}");
}
