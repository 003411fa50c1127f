//! Azure providers, both authenticated as the broker's own Entra ID identity
//! ([`identity::AzureAuth`]: workload identity federation on AKS, or a managed identity via IMDS):
//!
//! - `azure_key_vault`: a static secret, Key Vault
//!   `GET {vault}/secrets/{name}/{version}?api-version=7.4` (the latest version when none is
//!   pinned) with a token for `https://vault.azure.net`. The identity needs the "Key Vault Secrets
//!   User" role (or an access policy with `get`); `rotate`, where a generator is configured,
//!   `PUT {vault}/secrets/{name}` a new random value and so needs "Key Vault Secrets Officer" (`set`).
//! - `azure_access_token`: the just-in-time path, an Entra ID access token for one resource
//!   (`{resource}/.default`) injected as `Authorization: Bearer` on Azure routes. What the token
//!   may do is the identity's Azure RBAC roles: Entra ID cannot narrow an app-only token per
//!   request, so least privilege is one identity (and provider) per route.

pub mod access_token;
pub mod api;
pub mod identity;
pub mod key_vault;

pub use access_token::AzureAccessTokenProvider;
pub use key_vault::AzureKeyVaultProvider;

use http::{header, Method, Request};

use super::{ProviderError, Secret};
use crate::upstream::{full, Body};

/// The Key Vault data-plane API version every call pins.
pub const KEY_VAULT_API_VERSION: &str = "7.4";

/// A bearer-authorised JSON request; the header is marked sensitive.
fn authorised(method: Method, url: &str, token: &Secret, body: Option<Vec<u8>>) -> Result<Request<Body>, ProviderError> {
    let mut auth =
        http::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| ProviderError::permanent("the Entra ID token cannot form a header"))?;
    auth.set_sensitive(true);
    let mut req = Request::builder().method(method).uri(url).header(header::AUTHORIZATION, auth).header(header::ACCEPT, "application/json");
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    req.body(full(body.unwrap_or_default())).map_err(|e| ProviderError::permanent(format!("bad request to {url}: {e}")))
}
