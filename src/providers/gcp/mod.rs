//! Google Cloud providers, both authenticated as the broker's own Google identity
//! ([`identity::GoogleAuth`]: the metadata server, or a service-account key file for dev):
//!
//! - `gcp_secret_manager`: a static secret, Secret Manager
//!   `GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access` (`latest` or a pinned
//!   version). The broker's identity needs `roles/secretmanager.secretAccessor` on the secret.
//! - `gcp_access_token`: the just-in-time path, IAM Credentials
//!   `POST /v1/projects/-/serviceAccounts/{account}:generateAccessToken` with only the OAuth scopes
//!   the route needs for the request's method and a `lifetime` from the policy TTL (at most 3600 s,
//!   Google's default ceiling). The broker's identity needs `roles/iam.serviceAccountTokenCreator`
//!   on that service account.

pub mod api;
pub mod identity;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{header, Method, Request};
use serde::Deserialize;
use zeroize::Zeroizing;

use self::api::{call, parse_json};
use self::identity::GoogleAuth;
use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;
use crate::config::{GcpAccessTokenSettings, GcpSecretManagerSettings};
use crate::upstream::{full, HttpClient};

/// The longest `lifetime` asked of generateAccessToken without an organisation policy exception.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Bearer-authorised request to a Google API.
fn authorised(method: Method, url: &str, token: &Secret, body: Option<Vec<u8>>) -> Result<Request<crate::upstream::Body>, ProviderError> {
    let mut auth =
        http::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| ProviderError::permanent("the base token cannot form a header"))?;
    auth.set_sensitive(true);
    let mut req = Request::builder().method(method).uri(url).header(header::AUTHORIZATION, auth).header(header::ACCEPT, "application/json");
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    }
    req.body(full(body.unwrap_or_default())).map_err(|e| ProviderError::permanent(format!("bad request to {url}: {e}")))
}

fn percent(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

pub struct GcpSecretManagerProvider {
    name: String,
    settings: GcpSecretManagerSettings,
    auth: GoogleAuth,
    client: HttpClient,
}

#[derive(Deserialize)]
struct AccessAnswer {
    name: Option<String>,
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    data: Option<Zeroizing<String>>,
}

impl GcpSecretManagerProvider {
    pub fn new(name: &str, settings: GcpSecretManagerSettings, client: HttpClient, timeout: Duration) -> anyhow::Result<Self> {
        let auth = GoogleAuth::new(&settings.identity, client.clone(), timeout)?;
        Ok(GcpSecretManagerProvider { name: name.into(), settings, auth, client })
    }

    fn resource(&self) -> String {
        format!("projects/{}/secrets/{}/versions/{}", percent(&self.settings.project), percent(&self.settings.secret), percent(&self.settings.version))
    }
}

/// `gcp-secret:projects/{project}/secrets/{secret}/versions/{version}`.
pub fn secret_credential_scope(settings: &GcpSecretManagerSettings) -> String {
    format!("gcp-secret:projects/{}/secrets/{}/versions/{}", settings.project, settings.secret, settings.version)
}

impl CredentialProvider for GcpSecretManagerProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "gcp_secret_manager"
    }

    /// A static secret: the scope names it, the request cannot narrow it.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        secret_credential_scope(&self.settings)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let base = self.auth.token().await?;
            let resource = self.resource();
            let url = format!("{}/v1/{resource}:access", self.settings.endpoint_url.as_str().trim_end_matches('/'));
            let what = format!("Secret Manager access to {resource}");
            let body = call(&self.client, authorised(Method::GET, &url, &base, None)?, self.settings.timeout, &what).await?;
            let answer: AccessAnswer = parse_json(&body, &what)?;
            let data = answer.payload.data.ok_or_else(|| ProviderError::permanent(format!("{what}: the version has no payload data")))?;
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| ProviderError::retryable(format!("{what}: payload.data is not base64")))?,
            );
            let value = std::str::from_utf8(&bytes).map_err(|_| ProviderError::permanent(format!("{what}: the secret is not UTF-8 text")))?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                return Err(ProviderError::permanent(format!("{what}: the secret is empty")));
            }
            let mut details = std::collections::BTreeMap::new();
            details.insert("secret_version".to_string(), answer.name.unwrap_or(resource));
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(value)),
                expires_at: SystemTime::now() + self.settings.ttl.min(req.ttl),
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details,
            })
        }
        .boxed()
    }

    /// A value that was read cannot be un-read; disabling or destroying the version would break
    /// every other reader, so the broker does not. It drops its copy.
    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Ok(()) }.boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async {
            Err(ProviderError::permanent(
                "Secret Manager rotation is done by the secret's owner adding a version (its rotation schedule only notifies); the broker reads `latest` again after ttl_seconds",
            ))
        }
        .boxed()
    }
}

pub struct GcpAccessTokenProvider {
    name: String,
    settings: GcpAccessTokenSettings,
    auth: GoogleAuth,
    client: HttpClient,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenAnswer {
    access_token: Zeroizing<String>,
    expire_time: String,
}

impl GcpAccessTokenProvider {
    pub fn new(name: &str, settings: GcpAccessTokenSettings, client: HttpClient, timeout: Duration) -> anyhow::Result<Self> {
        let auth = GoogleAuth::new(&settings.identity, client.clone(), timeout)?;
        Ok(GcpAccessTokenProvider { name: name.into(), settings, auth, client })
    }
}

/// The `lifetime` asked for: the TTL rounded up to whole seconds, 1..=3600.
pub fn token_lifetime(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs).clamp(Duration::from_secs(1), MAX_TOKEN_LIFETIME)
}

/// The generateAccessToken request body for a credential scope (space-separated OAuth scopes).
pub fn generate_access_token_body(credential_scope: &str, ttl: Duration) -> serde_json::Value {
    let scopes: Vec<&str> = credential_scope.split_whitespace().collect();
    serde_json::json!({"scope": scopes, "lifetime": format!("{}s", token_lifetime(ttl).as_secs())})
}

impl CredentialProvider for GcpAccessTokenProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "gcp_access_token"
    }

    /// The OAuth scopes for this method: the base scopes plus the method's, sorted.
    fn credential_scope(&self, _scope: &Scope, method: &str) -> String {
        super::oauth2::credential_scope(&self.settings.scopes, &self.settings.scopes_by_method, method)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            if req.credential_scope.trim().is_empty() {
                return Err(ProviderError::permanent("refusing to ask for a Google access token without OAuth scopes"));
            }
            let base = self.auth.token().await?;
            let account = &self.settings.service_account;
            let url =
                format!("{}/v1/projects/-/serviceAccounts/{}:generateAccessToken", self.settings.endpoint_url.as_str().trim_end_matches('/'), percent(account));
            let what = format!("IAM Credentials generateAccessToken for {account}");
            let body = generate_access_token_body(&req.credential_scope, req.ttl).to_string().into_bytes();
            let answer = call(&self.client, authorised(Method::POST, &url, &base, Some(body))?, self.settings.timeout, &what).await?;
            let answer: GenerateAccessTokenAnswer = parse_json(&answer, &what)?;
            if answer.access_token.is_empty() {
                return Err(ProviderError::retryable(format!("{what}: the answer has an empty accessToken")));
            }
            let expire = time::OffsetDateTime::parse(&answer.expire_time, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ProviderError::retryable(format!("{what}: expireTime {:?} is not an RFC 3339 time", answer.expire_time)))?;
            let expire = SystemTime::from(expire);
            let mut details = std::collections::BTreeMap::new();
            details.insert("service_account".to_string(), account.clone());
            details.insert("lifetime_seconds".to_string(), token_lifetime(req.ttl).as_secs().to_string());
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(answer.access_token.as_str())),
                expires_at: expire.min(SystemTime::now() + req.ttl),
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details,
            })
        }
        .boxed()
    }

    /// Google offers no revocation of a generateAccessToken token: it lives until its
    /// `expireTime`, which the lifetime from policy keeps short. The broker drops its copy.
    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Ok(()) }.boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the gcp_access_token provider mints fresh tokens; there is no secret to rotate")) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_comes_from_the_ttl_within_googles_bounds() {
        assert_eq!(token_lifetime(Duration::from_millis(300_200)), Duration::from_secs(301));
        assert_eq!(token_lifetime(Duration::from_secs(8 * 3600)), MAX_TOKEN_LIFETIME);
        assert_eq!(token_lifetime(Duration::ZERO), Duration::from_secs(1));
        let body = generate_access_token_body("https://www.googleapis.com/auth/devstorage.read_only", Duration::from_secs(600));
        assert_eq!(body, serde_json::json!({"scope": ["https://www.googleapis.com/auth/devstorage.read_only"], "lifetime": "600s"}));
    }
}
