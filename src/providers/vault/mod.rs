//! `type: vault`: credentials from HashiCorp Vault or OpenBao (same API).
//!
//! - **auth** ([`auth`]): the broker's own token from a `token_file`, AppRole, or a JWT login
//!   (`jwt`, `kubernetes`: a projected service-account token); cached and renewed while Vault
//!   extends it (its leases die with it), obtained again at its max TTL or once Vault no longer
//!   accepts it (a 403 for a token that can still look itself up is a denial: no new login).
//! - **database** ([`database`]): a user per mint from `<mount>/creds/<role>`, the Vault lease id
//!   as the lease id; `renew` extends the Vault lease (up to the role's `max_ttl`), `revoke` ends
//!   it, and Vault's revocation statements drop the user. Vault's creds endpoint takes no TTL, so
//!   the role's `default_ttl`/`max_ttl` bound the user, not the request's ttl.
//! - **kv** ([`kv`]): one field of a KV v2 secret as a token for a header route, re-read after
//!   the configured ttl; nothing to revoke at Vault (rotate the secret there).
//!
//! Retries are the caller's ([`super::retry`]): connect failures, 5xx and 429 are retryable; other
//! 4xx (unknown role, permission denied, a bad secret id) are not. Every error text is scrubbed.

mod auth;
mod client;
mod database;
mod kv;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError};
use crate::classify::Scope;
use crate::config::{VaultEngine, VaultSettings};

pub struct VaultProvider {
    name: String,
    settings: VaultSettings,
    session: std::sync::Arc<auth::Session>,
}

impl VaultProvider {
    /// Builds the client and reads the login's credential file and the CA file now, so a missing
    /// one stops start-up. Vault itself is first asked on the first mint.
    pub fn new(name: &str, settings: &VaultSettings) -> Result<Self, ProviderError> {
        if let Some(ca) = &settings.ca_file {
            std::fs::read(ca).map_err(|e| ProviderError::permanent(format!("ca_file {}: {e}", ca.display())))?;
        }
        let client = client::build(settings)?;
        let session = auth::Session::new(settings.auth.clone(), client);
        session.check_files()?;
        Ok(VaultProvider { name: name.into(), settings: settings.clone(), session })
    }
}

/// What a lease of this provider grants: the Vault path it came from.
pub fn credential_scope(engine: &VaultEngine) -> String {
    match engine {
        VaultEngine::Database { mount, role } => format!("vault:{mount}/creds/{role}"),
        VaultEngine::Kv { mount, path, field, .. } => format!("vault:{mount}/data/{path}#{field}"),
    }
}

impl CredentialProvider for VaultProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "vault"
    }

    /// The Vault role (or secret) decides what the credential grants; the request's scope cannot
    /// narrow it, so the policy checks each request or statement instead.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        credential_scope(&self.settings.engine)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            // Vault counts the lease from when it answers: an expiry from before the request is
            // never later than Vault's.
            let asked_at = SystemTime::now();
            let mut details = BTreeMap::new();
            details.insert("vault_address".to_string(), self.settings.address.as_str().trim_end_matches('/').to_string());
            details.insert("vault_auth".to_string(), self.settings.auth.method().to_string());
            match &self.settings.engine {
                VaultEngine::Database { mount, role } => {
                    let creds = database::creds(&self.session, mount, role).await?;
                    details.insert("vault_lease_id".to_string(), creds.lease_id.clone());
                    details.insert("vault_mount".to_string(), mount.clone());
                    details.insert("vault_role".to_string(), role.clone());
                    details.insert("username".to_string(), creds.username.clone());
                    details.insert("lease_duration_seconds".to_string(), creds.lease_duration.as_secs().to_string());
                    details.insert("renewable".to_string(), creds.renewable.to_string());
                    Ok(Lease {
                        id: creds.lease_id,
                        provider: self.name.clone(),
                        credential: Credential::Password { username: creds.username, password: creds.password },
                        expires_at: asked_at + creds.lease_duration,
                        credential_scope: req.credential_scope.clone(),
                        identity: req.identity.clone(),
                        details,
                    })
                }
                VaultEngine::Kv { mount, path, field, ttl } => {
                    let value = kv::read_field(&self.session, mount, path, field).await?;
                    details.insert("vault_mount".to_string(), mount.clone());
                    details.insert("vault_path".to_string(), path.clone());
                    details.insert("vault_field".to_string(), field.clone());
                    Ok(Lease {
                        id: new_lease_id(),
                        provider: self.name.clone(),
                        credential: Credential::Token(value),
                        expires_at: asked_at + (*ttl).min(req.ttl),
                        credential_scope: req.credential_scope.clone(),
                        identity: req.identity.clone(),
                        details,
                    })
                }
            }
        }
        .boxed()
    }

    /// Database: `sys/leases/revoke`, after which Vault has run the role's revocation statements.
    /// KV: a value that was read cannot be un-read; the broker drops its copy (rotate at Vault).
    fn revoke<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            match &self.settings.engine {
                VaultEngine::Database { .. } => {
                    let lease_id = lease.details.get("vault_lease_id").unwrap_or(&lease.id);
                    database::revoke(&self.session, lease_id).await
                }
                VaultEngine::Kv { .. } => Ok(()),
            }
        }
        .boxed()
    }

    /// Database: asks Vault for the lease's original duration again. Vault never goes past the
    /// role's `max_ttl`: from there on the expiry it returns stops moving, and the caller ends at it.
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<SystemTime>, ProviderError>> {
        async move {
            match &self.settings.engine {
                VaultEngine::Database { .. } => {
                    if lease.details.get("renewable").is_some_and(|r| r == "false") {
                        return Ok(None);
                    }
                    let lease_id = lease.details.get("vault_lease_id").unwrap_or(&lease.id);
                    let increment = lease.details.get("lease_duration_seconds").and_then(|s| s.parse().ok()).map(Duration::from_secs);
                    let increment = increment.filter(|d| !d.is_zero()).unwrap_or(Duration::from_secs(300));
                    // Taken before the request: never later than the expiry Vault sets.
                    let asked_at = SystemTime::now();
                    let remaining = database::renew(&self.session, lease_id, increment).await?;
                    Ok(Some(asked_at + remaining))
                }
                VaultEngine::Kv { .. } => Ok(None),
            }
        }
        .boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the vault provider does not rotate: rotate the secret or the database root credential in Vault")) }.boxed()
    }
}
