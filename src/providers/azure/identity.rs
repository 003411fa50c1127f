//! The broker's own Azure identity: Entra ID access tokens through workload identity federation
//! (the projected Kubernetes service-account token as the client assertion of a client-credentials
//! grant) or a managed identity (IMDS).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use http::{header, Method, Request};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::api::{call, parse_json, Service, Throttle};
use crate::config::AzureIdentity;
use crate::providers::{ProviderError, Secret};
use crate::upstream::{full, HttpClient};

/// The IMDS API version for managed identity tokens.
pub const IMDS_API_VERSION: &str = "2018-02-01";
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A cached token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Larger projected tokens are refused (they are around 1 KiB).
const MAX_ASSERTION: u64 = 16 * 1024;

/// Entra ID tokens for the broker's configured identity, fresh or cached per scope.
pub struct AzureAuth {
    identity: AzureIdentity,
    client: HttpClient,
    timeout: Duration,
    throttle: Throttle,
    cached: tokio::sync::Mutex<HashMap<String, (Secret, SystemTime)>>,
}

/// The token endpoint's and IMDS's answer. Entra ID sends `expires_in` as a number, IMDS as a
/// string.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Zeroizing<String>,
    expires_in: Option<NumberOrString>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

impl AzureAuth {
    /// Checks that a workload identity's token file exists now, so a pod without the projected
    /// volume stops at start-up rather than at the first request.
    pub fn new(identity: &AzureIdentity, client: HttpClient, timeout: Duration) -> anyhow::Result<AzureAuth> {
        if let AzureIdentity::WorkloadIdentity { token_file, .. } = identity {
            let meta = std::fs::metadata(token_file).map_err(|e| anyhow::anyhow!("workload identity token file {}: {e}", token_file.display()))?;
            anyhow::ensure!(meta.is_file(), "workload identity token file {} is not a file", token_file.display());
        }
        Ok(AzureAuth { identity: identity.clone(), client, timeout, throttle: Throttle::default(), cached: Default::default() })
    }

    /// Non-secret words for audit details: which identity minted.
    pub fn describe(&self) -> String {
        match &self.identity {
            AzureIdentity::WorkloadIdentity { tenant_id, client_id, .. } => format!("workload_identity client {client_id} tenant {tenant_id}"),
            AzureIdentity::ManagedIdentity { client_id: Some(id), .. } => format!("managed_identity client {id}"),
            AzureIdentity::ManagedIdentity { client_id: None, .. } => "managed_identity system-assigned".into(),
        }
    }

    /// A token for `scope`, shared until five minutes before it expires (Key Vault calls).
    pub async fn cached_token(&self, scope: &str) -> Result<Secret, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.get(scope) {
            if SystemTime::now() + REFRESH_MARGIN < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fresh_token(scope).await?;
        cached.insert(scope.to_string(), (token.clone(), SystemTime::now() + lifetime));
        Ok(token)
    }

    /// Forgets a cached token the resource refused (401), so the next call asks again.
    pub async fn forget(&self, scope: &str) {
        self.cached.lock().await.remove(scope);
    }

    /// A new token for `scope` (`{resource}/.default`) and how long it lives.
    pub async fn fresh_token(&self, scope: &str) -> Result<(Secret, Duration), ProviderError> {
        match &self.identity {
            AzureIdentity::WorkloadIdentity { authority_host, tenant_id, client_id, token_file } => {
                self.federated_token(authority_host, tenant_id, client_id, token_file, scope).await
            }
            AzureIdentity::ManagedIdentity { endpoint, client_id } => self.imds_token(endpoint, client_id.as_deref(), scope).await,
        }
    }

    /// `POST {authority}/{tenant}/oauth2/v2.0/token`, client credentials with the projected token
    /// as the client assertion. The file is read on every grant: the kubelet rotates it.
    async fn federated_token(
        &self,
        authority: &url::Url,
        tenant_id: &str,
        client_id: &str,
        token_file: &std::path::Path,
        scope: &str,
    ) -> Result<(Secret, Duration), ProviderError> {
        let assertion = read_assertion(token_file)?;
        let form = Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", client_id)
                .append_pair("scope", scope)
                .append_pair("grant_type", "client_credentials")
                .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
                .append_pair("client_assertion", &assertion)
                .finish(),
        );
        let tenant: String = url::form_urlencoded::byte_serialize(tenant_id.as_bytes()).collect();
        let url = format!("{}/{tenant}/oauth2/v2.0/token", authority.as_str().trim_end_matches('/'));
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(full(form.as_bytes().to_vec()))
            .map_err(|e| ProviderError::permanent(format!("bad token request to {url}: {e}")))?;
        let what = format!("Entra ID token for client {client_id} (scope {scope})");
        let body = call(&self.client, &self.throttle, Service::EntraId, req, self.timeout, &what).await?;
        token_with_lifetime(parse_json(&body, &what)?, &what)
    }

    /// `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with
    /// `Metadata: true` (IMDS refuses requests without it, a guard against SSRF).
    async fn imds_token(&self, endpoint: &url::Url, client_id: Option<&str>, scope: &str) -> Result<(Secret, Duration), ProviderError> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut url = endpoint.join("/metadata/identity/oauth2/token").map_err(|e| ProviderError::permanent(format!("bad IMDS endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", IMDS_API_VERSION).append_pair("resource", resource);
            if let Some(id) = client_id {
                q.append_pair("client_id", id);
            }
        }
        let req = Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .header("metadata", "true")
            .body(full(Vec::new()))
            .map_err(|e| ProviderError::permanent(format!("bad IMDS request: {e}")))?;
        let what = format!("IMDS managed identity token for {resource}");
        let body = call(&self.client, &self.throttle, Service::Imds, req, self.timeout, &what).await?;
        token_with_lifetime(parse_json(&body, &what)?, &what)
    }
}

/// The projected service-account token, trimmed. Its content is never put in an error.
fn read_assertion(path: &std::path::Path) -> Result<Zeroizing<String>, ProviderError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| ProviderError::retryable(format!("workload identity token file {shown}: {e}")))?;
    if meta.len() > MAX_ASSERTION {
        return Err(ProviderError::permanent(format!("workload identity token file {shown} is larger than {MAX_ASSERTION} bytes")));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| ProviderError::retryable(format!("workload identity token file {shown}: {e}")))?);
    let token = Zeroizing::new(text.trim().to_string());
    // A JWT is three base64url parts; anything else would only earn an AADSTS error later.
    if token.split('.').count() != 3 || token.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(ProviderError::retryable(format!("workload identity token file {shown} does not hold a JWT")));
    }
    Ok(token)
}

fn token_with_lifetime(answer: TokenAnswer, what: &str) -> Result<(Secret, Duration), ProviderError> {
    if answer.access_token.is_empty() {
        return Err(ProviderError::retryable(format!("{what}: the answer has an empty access_token")));
    }
    if let Some(kind) = answer.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(ProviderError::permanent(format!("{what}: token_type {kind:?} is not Bearer")));
    }
    let seconds = match answer.expires_in {
        Some(NumberOrString::Number(n)) => Some(n),
        Some(NumberOrString::String(s)) => Some(s.trim().parse().map_err(|_| ProviderError::retryable(format!("{what}: expires_in {s:?} is not a number")))?),
        None => None,
    };
    // Without expires_in the lifetime is unknown: keep the token five minutes.
    Ok((Secret::new(answer.access_token.as_str()), Duration::from_secs(seconds.unwrap_or(300))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_as_a_number_or_a_string() {
        let entra: TokenAnswer = serde_json::from_str(r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"t1"}"#).unwrap();
        assert_eq!(token_with_lifetime(entra, "x").unwrap().1, Duration::from_secs(3599));
        let imds: TokenAnswer = serde_json::from_str(r#"{"access_token":"t2","expires_in":"86399","expires_on":"1700000000","token_type":"Bearer"}"#).unwrap();
        assert_eq!(token_with_lifetime(imds, "x").unwrap().1, Duration::from_secs(86399));
        let bad: TokenAnswer = serde_json::from_str(r#"{"access_token":"t3","expires_in":"soon"}"#).unwrap();
        assert!(token_with_lifetime(bad, "x").unwrap_err().message.contains("expires_in \"soon\""));
        let pop: TokenAnswer = serde_json::from_str(r#"{"access_token":"t4","token_type":"pop"}"#).unwrap();
        assert!(!token_with_lifetime(pop, "x").unwrap_err().retryable);
    }

    #[test]
    fn the_assertion_file_must_hold_a_jwt_and_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n").unwrap();
        assert_eq!(read_assertion(&path).unwrap().as_str(), "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln");
        std::fs::write(&path, "not a token at all").unwrap();
        let e = read_assertion(&path).unwrap_err();
        assert!(e.message.ends_with("does not hold a JWT") && !e.message.contains("not a token"), "{}", e.message);
    }
}
