//! The `oauth2` provider: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4) against a token
//! endpoint. This is the just-in-time path for generic HTTPS APIs: each token carries only the
//! scopes the request needs and lives no longer than the answer (or policy) says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;
use crate::providers::redact::{error_chain, truncate};
use crate::upstream::{full, HttpClient};

/// Token answers larger than this are refused rather than buffered.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

pub struct OAuth2Settings {
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub scopes: Vec<String>,
    pub scopes_by_method: BTreeMap<String, Vec<String>>,
    pub audience: Option<String>,
    pub revocation_url: Option<url::Url>,
    pub request_timeout: Duration,
}

pub struct OAuth2Provider {
    name: String,
    settings: OAuth2Settings,
    client: HttpClient,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Zeroizing<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    error_description: Option<String>,
}

impl OAuth2Provider {
    /// Fails if the client secret file is missing or readable by anyone but the broker's user.
    pub fn new(name: &str, settings: OAuth2Settings, client: HttpClient) -> anyhow::Result<Self> {
        read_client_secret(&settings.client_secret_file)?;
        Ok(OAuth2Provider { name: name.into(), settings, client })
    }

    async fn post_form(&self, url: &url::Url, form: Zeroizing<String>) -> Result<(StatusCode, bytes::Bytes), ProviderError> {
        let secret = read_client_secret(&self.settings.client_secret_file).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let basic = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.settings.client_id),
            form_encode(secret.expose())
        )));
        let mut auth = http::HeaderValue::from_str(&format!("Basic {}", basic.as_str()))
            .map_err(|_| ProviderError::permanent("client credentials cannot form a header"))?;
        auth.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, auth)
            .body(full(form.as_bytes().to_vec()))
            .map_err(|e| ProviderError::permanent(format!("bad token request: {e}")))?;
        let resp = tokio::time::timeout(self.settings.request_timeout, self.client.request(req))
            .await
            .map_err(|_| ProviderError::retryable(format!("token endpoint {} timed out", host_of(url))))?
            .map_err(|e| ProviderError::retryable(format!("token endpoint {} unreachable: {}", host_of(url), error_chain(&e))))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| ProviderError::retryable(format!("reading token endpoint answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

impl CredentialProvider for OAuth2Provider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "oauth2"
    }

    /// The OAuth scopes: the provider's base scopes plus those configured for the request method.
    fn credential_scope(&self, _scope: &Scope, method: &str) -> String {
        credential_scope(&self.settings.scopes, &self.settings.scopes_by_method, method)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let form = {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "client_credentials");
                if !req.credential_scope.is_empty() {
                    form.append_pair("scope", &req.credential_scope);
                }
                if let Some(aud) = &self.settings.audience {
                    form.append_pair("audience", aud);
                }
                Zeroizing::new(form.finish())
            };
            let (status, body) = self.post_form(&self.settings.token_url, form).await?;
            if !status.is_success() {
                return Err(token_error(status, &body));
            }
            let token: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::retryable(format!("token endpoint answered {status} with malformed JSON: {}", json_error_kind(&e))))?;
            if token.access_token.is_empty() {
                return Err(ProviderError::retryable("token endpoint answered with an empty access_token"));
            }
            let lifetime = token.expires_in.map(Duration::from_secs).unwrap_or(req.ttl).min(req.ttl);
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(token.access_token.as_str())),
                expires_at: SystemTime::now() + lifetime,
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details: Default::default(),
            })
        }
        .boxed()
    }

    /// RFC 7009 token revocation when the provider has a revocation endpoint; otherwise the token
    /// simply expires (the broker has already dropped its copy).
    fn revoke<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let Some(url) = &self.settings.revocation_url else { return Ok(()) };
            let Credential::Token(token) = &lease.credential else { return Ok(()) };
            let form = Zeroizing::new(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", token.expose())
                    .append_pair("token_type_hint", "access_token")
                    .finish(),
            );
            let (status, body) = self.post_form(url, form).await?;
            if status.is_success() {
                Ok(())
            } else {
                Err(token_error(status, &body))
            }
        }
        .boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the oauth2 provider mints fresh tokens; there is no secret to rotate")) }.boxed()
    }
}

/// The OAuth scope string for a request: base scopes plus the method's, sorted and deduplicated
/// so equal grants share one cache entry.
pub fn credential_scope(scopes: &[String], by_method: &BTreeMap<String, Vec<String>>, method: &str) -> String {
    let mut all: Vec<&str> = scopes.iter().map(String::as_str).collect();
    if let Some(extra) = by_method.get(&method.to_ascii_uppercase()) {
        all.extend(extra.iter().map(String::as_str));
    }
    all.sort_unstable();
    all.dedup();
    all.join(" ")
}

/// 5xx and 429 are worth retrying; other 4xx (bad client, bad scope) are not.
fn token_error(status: StatusCode, body: &[u8]) -> ProviderError {
    // Only the standard error code and description are reported: an error body is not trusted
    // to be free of secret material.
    let detail = serde_json::from_slice::<TokenError>(body)
        .map(|e| format!(": {}{}", e.error, e.error_description.map(|d| format!(" ({})", truncate(&d, 200))).unwrap_or_default()))
        .unwrap_or_default();
    let message = format!("token endpoint answered {status}{detail}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::retryable(message)
    } else {
        ProviderError::permanent(message)
    }
}

/// Where the JSON is wrong, never what it held: serde messages can quote the offending value.
fn json_error_kind(e: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
}

fn host_of(url: &url::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or("?"), url.port_or_known_default().unwrap_or(0))
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Read the client secret, refusing a file that group or others could read.
fn read_client_secret(path: &Path) -> anyhow::Result<Secret> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("client secret file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "client secret file {} is accessible by group or others (mode {:o}); it must be readable only by the broker (chmod 600)",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("client secret file {}: {e}", path.display()))?);
    Ok(Secret::new(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_throttling_retry_client_errors_do_not() {
        assert!(token_error(StatusCode::INTERNAL_SERVER_ERROR, b"").retryable);
        assert!(token_error(StatusCode::TOO_MANY_REQUESTS, b"").retryable);
        let e = token_error(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#);
        assert!(!e.retryable);
        assert_eq!(e.message, "token endpoint answered 401 Unauthorized: invalid_client");
    }

    #[test]
    fn a_world_readable_secret_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_client_secret(&f).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_client_secret(&f).unwrap().expose(), "s");
    }
}
