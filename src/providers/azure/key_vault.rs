//! `azure_key_vault`: one Key Vault secret, read with `Get Secret` and handed to an injector.
//!
//! - **Which value**: the pinned `version`, else the latest (`GET /secrets/{name}`, the version
//!   segment omitted as the REST reference allows).
//! - **Lifetime**: re-read after `ttl` (capped by the policy TTL and by the secret's `exp`
//!   attribute, which Key Vault records but does not enforce; the broker refuses an expired one).
//! - **Rotate** (only with `rotation_generator`): `Set Secret` with a fresh random value, which
//!   Key Vault stores as a new version that becomes the latest; the caller then drops the cached
//!   leases ([`crate::providers::rotation::rotate_and_drop`]). Useful where the other side also
//!   reads the value from this vault (a shared webhook or service-to-service key); an API key issued
//!   by a vendor cannot be rotated by writing a random value, so rotation is off unless configured.
//! - **Revoke** does nothing at Azure: a value that was read cannot be un-read, and disabling the
//!   version would break every other reader. The broker drops its copy; rotation kills the value.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::Method;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::api::{call, parse_json, Service, Throttle};
use super::identity::AzureAuth;
use super::{authorised, KEY_VAULT_API_VERSION};
use crate::classify::Scope;
use crate::config::{AzureKeyVaultSettings, AzureSecretGenerator};
use crate::providers::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::upstream::HttpClient;

pub struct AzureKeyVaultProvider {
    name: String,
    settings: AzureKeyVaultSettings,
    auth: AzureAuth,
    client: HttpClient,
    throttle: Throttle,
    /// `https://vault.azure.net/.default`, or the sovereign cloud's.
    token_scope: String,
}

/// Key Vault's `SecretBundle`, the parts the broker uses.
#[derive(Deserialize)]
struct SecretBundle {
    value: Option<Zeroizing<String>>,
    id: Option<String>,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Deserialize, Default)]
struct Attributes {
    enabled: Option<bool>,
    /// Expiry, in seconds since the epoch.
    exp: Option<u64>,
}

/// The token audience for a vault: `https://vault.azure.net` unless the vault lives in a
/// sovereign cloud (`*.vault.azure.cn`, `*.vault.usgovcloudapi.net`).
pub fn token_scope(vault_url: &url::Url) -> String {
    let host = vault_url.host_str().unwrap_or_default().to_ascii_lowercase();
    let suffix = ["vault.azure.cn", "vault.usgovcloudapi.net"].into_iter().find(|s| host.ends_with(&format!(".{s}"))).unwrap_or("vault.azure.net");
    format!("https://{suffix}/.default")
}

/// `azure-keyvault:{vault host}/secrets/{name}/{version or latest}`.
pub fn credential_scope(settings: &AzureKeyVaultSettings) -> String {
    let host = settings.vault_url.host_str().unwrap_or_default();
    format!("azure-keyvault:{host}/secrets/{}/{}", settings.secret, settings.version.as_deref().unwrap_or("latest"))
}

impl AzureKeyVaultProvider {
    pub fn new(name: &str, settings: AzureKeyVaultSettings, client: HttpClient) -> anyhow::Result<Self> {
        let auth = AzureAuth::new(&settings.identity, client.clone(), settings.timeout)?;
        let token_scope = token_scope(&settings.vault_url);
        Ok(AzureKeyVaultProvider { name: name.into(), settings, auth, client, throttle: Throttle::default(), token_scope })
    }

    fn secret_url(&self, version: Option<&str>) -> String {
        let vault = self.settings.vault_url.as_str().trim_end_matches('/');
        let version = version.map(|v| format!("/{v}")).unwrap_or_default();
        format!("{vault}/secrets/{}{version}?api-version={KEY_VAULT_API_VERSION}", self.settings.secret)
    }

    /// One Key Vault call with the cached token; a 401 makes the token be asked for again next time.
    async fn vault_call(&self, method: Method, url: &str, body: Option<Vec<u8>>, what: &str) -> Result<bytes::Bytes, ProviderError> {
        let token = self.auth.cached_token(&self.token_scope).await?;
        let result = call(&self.client, &self.throttle, Service::KeyVault, authorised(method, url, &token, body)?, self.settings.timeout, what).await;
        if result.as_ref().is_err_and(|e| e.message.contains("HTTP 401")) {
            self.auth.forget(&self.token_scope).await;
        }
        result
    }
}

/// 32 random bytes from the system's CSPRNG, base64url without padding.
fn generate(generator: AzureSecretGenerator) -> Result<Zeroizing<String>, ProviderError> {
    match generator {
        AzureSecretGenerator::RandomBase64Url32 => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
                .map_err(|_| ProviderError::permanent("the system random generator failed"))?;
            Ok(Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())))
        }
    }
}

impl CredentialProvider for AzureKeyVaultProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "azure_key_vault"
    }

    /// A static secret: the request cannot narrow it, so the scope names it.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        credential_scope(&self.settings)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let secret = &self.settings.secret;
            let what = format!("Key Vault get secret {secret}");
            let body = self.vault_call(Method::GET, &self.secret_url(self.settings.version.as_deref()), None, &what).await?;
            let bundle: SecretBundle = parse_json(&body, &what)?;
            if bundle.attributes.enabled == Some(false) {
                return Err(ProviderError::permanent(format!("{what}: the secret version is disabled")));
            }
            let now = SystemTime::now();
            let mut expires_at = now + self.settings.ttl.min(req.ttl);
            if let Some(exp) = bundle.attributes.exp.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)) {
                if exp <= now {
                    return Err(ProviderError::permanent(format!("{what}: the secret version expired (attributes.exp)")));
                }
                expires_at = expires_at.min(exp);
            }
            let value = bundle.value.filter(|v| !v.is_empty()).ok_or_else(|| ProviderError::permanent(format!("{what}: the secret has no value")))?;
            let mut details = std::collections::BTreeMap::new();
            // The id is the versioned secret URL: which version was served, never the value.
            details.insert("secret_id".to_string(), bundle.id.unwrap_or_else(|| self.secret_url(self.settings.version.as_deref())));
            details.insert("identity".to_string(), self.auth.describe());
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(value.as_str())),
                expires_at,
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details,
            })
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Ok(()) }.boxed()
    }

    /// `Set Secret` with a generated value, on the configured secret only (`secret_id` must name
    /// it or be empty).
    fn rotate<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let secret = &self.settings.secret;
            if !secret_id.is_empty() && secret_id != secret {
                return Err(ProviderError::permanent(format!("provider {} serves Key Vault secret {secret}, not {secret_id}", self.name)));
            }
            let Some(generator) = self.settings.rotation_generator else {
                return Err(ProviderError::permanent(
                    "Key Vault rotation through the broker needs `rotation_generator`; otherwise the secret's owner sets a new version and the broker reads it after ttl_seconds",
                ));
            };
            if self.settings.version.is_some() {
                return Err(ProviderError::permanent("a pinned Key Vault version cannot be rotated"));
            }
            let value = generate(generator)?;
            let body = Zeroizing::new(serde_json::to_vec(&serde_json::json!({"value": value.as_str(), "contentType": "text/plain"})).unwrap_or_default());
            let what = format!("Key Vault set secret {secret}");
            let answer = self.vault_call(Method::PUT, &self.secret_url(None), Some(body.to_vec()), &what).await?;
            let bundle: SecretBundle = parse_json(&answer, &what)?;
            tracing::info!(provider = %self.name, secret_id = bundle.id.as_deref().unwrap_or("?"), "Key Vault secret rotated to a new version");
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_audience_follows_the_vaults_cloud() {
        let scope = |u: &str| token_scope(&url::Url::parse(u).unwrap());
        assert_eq!(scope("https://demo.vault.azure.net"), "https://vault.azure.net/.default");
        assert_eq!(scope("https://demo.vault.azure.cn"), "https://vault.azure.cn/.default");
        assert_eq!(scope("https://demo.vault.usgovcloudapi.net"), "https://vault.usgovcloudapi.net/.default");
        assert_eq!(scope("https://localhost:8443"), "https://vault.azure.net/.default");
    }

    #[test]
    fn generated_values_are_43_base64url_characters_and_differ() {
        let a = generate(AzureSecretGenerator::RandomBase64Url32).unwrap();
        let b = generate(AzureSecretGenerator::RandomBase64Url32).unwrap();
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.as_str(), b.as_str());
    }
}
