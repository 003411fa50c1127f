//! Credential providers: the [`CredentialProvider`] trait and what sits around every provider
//! (retry with backoff, the fail-closed alert, the lease cache with single-flight minting).

pub mod alert;
mod aws_sdk;
pub mod aws_secrets_manager;
pub mod azure;
pub mod cache;
pub mod env;
pub mod gcp;
pub mod oauth2;
pub mod postgres_native;
pub(crate) mod redact;
pub mod retry;
pub mod rotation;
pub mod secret;
pub mod sts;
pub mod vault;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Serialize;

pub use secret::Secret;

use crate::classify::Scope;

/// Who is asking: the agent and the tenant it acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    pub agent_id: String,
    pub tenant: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a provider is asked to mint.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub identity: Identity,
    /// The request's scope, as classified.
    pub scope: Scope,
    /// What the credential will actually grant, in the provider's own terms (see
    /// [`CredentialProvider::credential_scope`]). Part of the cache key.
    pub credential_scope: String,
    /// The longest the credential may live (policy `ttl_seconds`, else the configured default).
    pub ttl: Duration,
    pub request_id: String,
}

/// A minted credential with its identity and expiry. The secret never leaves through `Debug`.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub provider: String,
    pub credential: Credential,
    pub expires_at: SystemTime,
    /// The credential scope it was minted for.
    pub credential_scope: String,
    pub identity: Identity,
    /// Non-secret facts about the issuance for the audit record (role ARN, session name, source
    /// identity, duration…). Never put key material here.
    pub details: std::collections::BTreeMap<String, String>,
}

/// What a lease carries. Every secret part is a [`Secret`], so no formatting path shows it.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token, API key or password, injected into a header.
    Token(Secret),
    /// AWS session credentials, used to SigV4-sign. The key id is not secret by itself but is
    /// kept out of logs and audit all the same: it names a live session.
    AwsSession { access_key_id: Secret, secret_access_key: Secret, session_token: Secret },
    /// A database login: a user name (not secret, it names the just-in-time role) and its password.
    Password { username: String, password: Secret },
}

impl Credential {
    /// The secret values, for tests and scanners that must prove none leaked.
    pub fn secret_parts(&self) -> Vec<&Secret> {
        match self {
            Credential::Token(s) => vec![s],
            Credential::AwsSession { access_key_id, secret_access_key, session_token } => vec![access_key_id, secret_access_key, session_token],
            Credential::Password { password, .. } => vec![password],
        }
    }
}

/// Why a provider could not mint. Messages never contain secret material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Worth retrying (network errors, 5xx, throttling) or not (bad client credentials, 4xx).
    pub retryable: bool,
    pub message: String,
}

impl ProviderError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError { retryable: true, message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError { retryable: false, message: message.into() }
    }
}

/// A source of just-in-time credentials.
pub trait CredentialProvider: Send + Sync {
    /// The provider's configured name.
    fn name(&self) -> &str;

    /// The provider type (`env`, `oauth2`, …) for audit records.
    fn kind(&self) -> &'static str;

    /// What a credential minted for this request would grant, in the provider's terms: an OAuth
    /// scope string, an IAM session policy, a database role. Requests with equal credential scopes
    /// (and the same agent and tenant) share one cached credential.
    fn credential_scope(&self, scope: &Scope, method: &str) -> String;

    /// Mint a credential for exactly `req.credential_scope`, living at most `req.ttl`.
    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>>;

    /// Invalidate a lease at its source where the source supports it.
    fn revoke<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Extend a lease that is still in use (a database session that is still open), at most as
    /// far as the source allows. `Ok(Some(expiry))`: the lease now lives until `expiry`;
    /// `Ok(None)`: this provider cannot renew, so whatever uses the lease ends at its expiry.
    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<Option<SystemTime>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }

    /// Rotate a long-lived secret the provider manages.
    fn rotate<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
}

pub type SharedProvider = Arc<dyn CredentialProvider>;

/// A fresh, unguessable lease id.
pub fn new_lease_id() -> String {
    format!("lease-{}", uuid::Uuid::new_v4().simple())
}
