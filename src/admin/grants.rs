//! `GET /v1/grants`, `POST /v1/grants/{id}/revoke` and `POST /v1/grants/revoke` (by filter).
//!
//! A revoke evicts the lease from the cache first (so no later request is given it), then asks
//! the provider to invalidate it at the source, then writes a `revoke` audit record. A mint that is
//! in flight at that moment is not a grant yet and is not revoked; revoke again if it lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::audit::record::rfc3339;
use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::classify::Scope;
use crate::providers::Lease;

/// The request scope each live lease was first minted for (the cache keys on the credential
/// scope, which several request scopes may share). Pruned to live leases as it grows.
#[derive(Default)]
pub struct MintedScopes {
    scopes: Mutex<HashMap<String, Scope>>,
}

impl MintedScopes {
    pub fn record(&self, lease_id: &str, scope: &Scope, broker: &Broker) {
        let mut scopes = self.lock();
        if scopes.len() >= broker.config.credentials.cache_max_entries.saturating_mul(2) {
            let live: std::collections::HashSet<String> = broker.cache.leases().iter().map(|l| l.id.clone()).collect();
            scopes.retain(|id, _| live.contains(id));
        }
        scopes.insert(lease_id.to_string(), scope.clone());
    }

    fn get(&self, lease_id: &str) -> Option<Scope> {
        self.lock().get(lease_id).cloned()
    }

    fn forget(&self, lease_id: &str) {
        self.lock().remove(lease_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Scope>> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One active lease as the API shows it: who, what, until when. Never the credential.
#[derive(Debug, Serialize)]
pub struct Grant {
    pub id: String,
    pub agent_id: String,
    pub tenant: String,
    pub provider: String,
    /// The request scope the lease was minted for (service, action, resource).
    pub scope: Option<Scope>,
    /// What the credential grants, in the provider's terms.
    pub credential_scope: String,
    pub expires_at: String,
    pub expires_in_seconds: u64,
}

fn grant(broker: &Broker, lease: &Lease) -> Grant {
    Grant {
        id: lease.id.clone(),
        agent_id: lease.identity.agent_id.clone(),
        tenant: lease.identity.tenant.clone(),
        provider: lease.provider.clone(),
        scope: broker.minted_scopes.get(&lease.id),
        credential_scope: lease.credential_scope.clone(),
        expires_at: rfc3339(lease.expires_at),
        expires_in_seconds: lease.expires_at.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
    }
}

pub fn list(broker: &Broker) -> serde_json::Value {
    let mut leases = broker.cache.leases();
    leases.sort_by_key(|l| l.expires_at);
    let grants: Vec<Grant> = leases.iter().map(|l| grant(broker, l)).collect();
    serde_json::json!({ "grants": grants })
}

/// `POST /v1/grants/revoke`: who to cut off. An empty filter must say `{"all": true}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeFilter {
    pub agent_id: Option<String>,
    pub tenant: Option<String>,
    pub provider: Option<String>,
    #[serde(default)]
    pub all: bool,
}

impl RevokeFilter {
    fn check(&self) -> Result<(), AdminError> {
        let narrowed = self.agent_id.is_some() || self.tenant.is_some() || self.provider.is_some();
        match (narrowed, self.all) {
            (false, false) => Err(AdminError::BadRequest("an empty filter would revoke every grant; send {\"all\": true} to mean that".into())),
            (true, true) => Err(AdminError::BadRequest("\"all\": true cannot be combined with agent_id, tenant or provider".into())),
            _ => Ok(()),
        }
    }

    fn matches(&self, lease: &Lease) -> bool {
        self.agent_id.as_ref().is_none_or(|a| *a == lease.identity.agent_id)
            && self.tenant.as_ref().is_none_or(|t| *t == lease.identity.tenant)
            && self.provider.as_ref().is_none_or(|p| *p == lease.provider)
    }
}

/// What happened to one revoked lease.
#[derive(Debug, Serialize)]
pub struct Revoked {
    pub id: String,
    pub provider: String,
    /// Whether the provider invalidated it at the source (some sources cannot; the broker has dropped it either way).
    pub provider_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_error: Option<String>,
}

pub async fn revoke_one(broker: &Arc<Broker>, id: &str, request_id: &str) -> Result<serde_json::Value, AdminError> {
    let removed = broker.cache.remove_where(|l| l.id == id);
    if removed.is_empty() {
        return Err(AdminError::UnknownGrant(id.to_string()));
    }
    revoke_all(broker, removed, request_id, &format!("grant {id} revoked through the broker API")).await
}

pub async fn revoke_matching(broker: &Arc<Broker>, filter: RevokeFilter, request_id: &str) -> Result<serde_json::Value, AdminError> {
    filter.check()?;
    let removed = broker.cache.remove_where(|l| filter.matches(l));
    let reason = if filter.all {
        "every grant revoked through the broker API".to_string()
    } else {
        format!("grants revoked through the broker API by filter {filter:?}")
    };
    revoke_all(broker, removed, request_id, &reason).await
}

async fn revoke_all(broker: &Arc<Broker>, leases: Vec<Arc<Lease>>, request_id: &str, reason: &str) -> Result<serde_json::Value, AdminError> {
    let mut revoked = Vec::with_capacity(leases.len());
    let mut audit_errors = Vec::new();
    for lease in leases {
        let outcome = revoke_at_source(broker, &lease).await;
        let mut record = AuditRecord::new(AuditEvent::Revoke, request_id, &lease.identity.agent_id, &lease.identity.tenant);
        record.provider = Some(lease.provider.clone());
        record.lease_id = Some(lease.id.clone());
        record.credential_scope = Some(lease.credential_scope.clone());
        record.scope = broker.minted_scopes.get(&lease.id);
        record.expiry = Some(rfc3339(lease.expires_at));
        record.reason = Some(match &outcome.provider_error {
            None => reason.to_string(),
            Some(e) => format!("{reason}; the provider could not revoke it at the source: {e}"),
        });
        if let Err(e) = broker.audit(record).await {
            audit_errors.push(e.to_string());
        }
        broker.minted_scopes.forget(&lease.id);
        broker.metrics.revocations.inc();
        tracing::warn!(lease_id = %lease.id, provider = %lease.provider, agent_id = %lease.identity.agent_id, tenant = %lease.identity.tenant, provider_revoked = outcome.provider_revoked, "grant revoked");
        revoked.push(outcome);
    }
    if let Some(e) = audit_errors.first() {
        return Err(AdminError::AuditUnavailable(format!(
            "{} grant(s) were revoked but {} audit record(s) could not be written: {e}",
            revoked.len(),
            audit_errors.len()
        )));
    }
    Ok(serde_json::json!({ "revoked": revoked, "count": revoked.len() }))
}

async fn revoke_at_source(broker: &Broker, lease: &Lease) -> Revoked {
    let result = match broker.providers.get(&lease.provider) {
        Some(p) => tokio::time::timeout(Duration::from_secs(10), p.revoke(lease))
            .await
            .unwrap_or_else(|_| Err(crate::providers::ProviderError::retryable("no answer within 10 s"))),
        None => Err(crate::providers::ProviderError::permanent("provider is not configured")),
    };
    Revoked { id: lease.id.clone(), provider: lease.provider.clone(), provider_revoked: result.is_ok(), provider_error: result.err().map(|e| e.message) }
}
