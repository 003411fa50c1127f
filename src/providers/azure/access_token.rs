//! `azure_access_token`: the just-in-time path, an Entra ID access token for one resource, minted
//! on demand and kept by the broker's lease cache until shortly before it expires.
//!
//! - **Lifetime** is Entra ID's (`expires_in`, usually 60-90 minutes; a managed identity's can be
//!   24 hours), capped by the policy TTL: the lease ends at the earlier, and the cache mints anew.
//!   Entra ID takes no lifetime in the request, so a token outlives a shorter policy TTL at Azure.
//! - **Revoke** does nothing at Azure: an access token is a signed JWT checked by the resource
//!   itself, and Entra ID has no call to revoke one. Disabling the identity (or its federated
//!   credential) stops new tokens; resources with continuous access evaluation also drop live ones.

use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::identity::AzureAuth;
use crate::classify::Scope;
use crate::config::AzureAccessTokenSettings;
use crate::providers::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError};
use crate::upstream::HttpClient;

pub struct AzureAccessTokenProvider {
    name: String,
    settings: AzureAccessTokenSettings,
    auth: AzureAuth,
}

impl AzureAccessTokenProvider {
    pub fn new(name: &str, settings: AzureAccessTokenSettings, client: HttpClient) -> anyhow::Result<Self> {
        let auth = AzureAuth::new(&settings.identity, client, settings.timeout)?;
        Ok(AzureAccessTokenProvider { name: name.into(), settings, auth })
    }
}

impl CredentialProvider for AzureAccessTokenProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "azure_access_token"
    }

    /// The one `{resource}/.default` scope: an app-only token cannot be narrowed per request.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        self.settings.scope.clone()
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let (token, lifetime) = self.auth.fresh_token(&self.settings.scope).await?;
            let mut details = std::collections::BTreeMap::new();
            details.insert("identity".to_string(), self.auth.describe());
            details.insert("expires_in_seconds".to_string(), lifetime.as_secs().to_string());
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(token),
                expires_at: SystemTime::now() + lifetime.min(req.ttl),
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

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the azure_access_token provider mints fresh tokens; there is no secret to rotate")) }.boxed()
    }
}
