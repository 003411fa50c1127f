//! `GET /v1/grants`, `POST /v1/grants/{id}/revoke` and `POST /v1/grants/revoke` (by filter).
//!
//! Grants are the cache's leases and the leases of live database sessions (`kind`
//! `database_session`, from [`crate::postgres::registry`]).
//!
//! A revoke evicts the lease from the cache first (so no later request is given it), or ends the
//! database session holding it (the agent gets `FATAL 57P01`, the upstream connection is closed)
//! and waits for it to be gone; then asks the provider to invalidate the lease at the source,
//! then writes a `revoke` audit record. A mint that is in flight at that moment is not a grant yet
//! and is not revoked; revoke again if it lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::audit::record::rfc3339;
use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::classify::Scope;
use crate::postgres::registry::{LiveSession, TakenSession};
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
    /// `cached_lease` (held in the lease cache for HTTP requests) or `database_session` (the
    /// lease of one open database session).
    pub kind: &'static str,
    pub agent_id: String,
    pub tenant: String,
    pub provider: String,
    /// The request scope the lease was minted for (service, action, resource).
    pub scope: Option<Scope>,
    /// What the credential grants, in the provider's terms.
    pub credential_scope: String,
    pub expires_at: String,
    pub expires_in_seconds: u64,
    /// The configured database (`databases[].name`) of a database session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The database session's id (the `request_id` of its audit records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

pub const CACHED_LEASE: &str = "cached_lease";
pub const DATABASE_SESSION: &str = "database_session";

fn grant(lease: &Lease, kind: &'static str, scope: Option<Scope>) -> Grant {
    Grant {
        id: lease.id.clone(),
        kind,
        agent_id: lease.identity.agent_id.clone(),
        tenant: lease.identity.tenant.clone(),
        provider: lease.provider.clone(),
        scope,
        credential_scope: lease.credential_scope.clone(),
        expires_at: rfc3339(lease.expires_at),
        expires_in_seconds: lease.expires_at.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
        database: None,
        session_id: None,
    }
}

fn session_grant(s: &LiveSession) -> Grant {
    Grant { database: Some(s.database.clone()), session_id: Some(s.session_id.clone()), ..grant(&s.lease, DATABASE_SESSION, Some(s.scope.clone())) }
}

pub fn list(broker: &Broker) -> serde_json::Value {
    let leases = broker.cache.leases();
    let mut grants: Vec<(SystemTime, Grant)> = leases.iter().map(|l| (l.expires_at, grant(l, CACHED_LEASE, broker.minted_scopes.get(&l.id)))).collect();
    grants.extend(broker.sessions.list().iter().map(|s| (s.lease.expires_at, session_grant(s))));
    grants.sort_by_key(|(t, _)| *t);
    let grants: Vec<Grant> = grants.into_iter().map(|(_, g)| g).collect();
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
    pub kind: &'static str,
    pub provider: String,
    /// Whether the provider invalidated it at the source (some sources cannot; the broker has dropped it either way).
    pub provider_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_error: Option<String>,
    /// A database session's id: the session was ended before its lease was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// How long a revoke waits for a database session to close its connections before it revokes
/// the lease at the source anyway (the provider's revoke ends the server's backends too).
const SESSION_END_WAIT: Duration = Duration::from_secs(5);

pub async fn revoke_one(broker: &Arc<Broker>, id: &str, request_id: &str) -> Result<serde_json::Value, AdminError> {
    let removed = broker.cache.remove_where(|l| l.id == id);
    let sessions = broker.sessions.take_where(|l| l.id == id);
    if removed.is_empty() && sessions.is_empty() {
        return Err(AdminError::UnknownGrant(id.to_string()));
    }
    revoke_all(broker, removed, sessions, request_id, &format!("grant {id} revoked through the broker API")).await
}

pub async fn revoke_matching(broker: &Arc<Broker>, filter: RevokeFilter, request_id: &str) -> Result<serde_json::Value, AdminError> {
    filter.check()?;
    let removed = broker.cache.remove_where(|l| filter.matches(l));
    let sessions = broker.sessions.take_where(|l| filter.matches(l));
    let reason = if filter.all {
        "every grant revoked through the broker API".to_string()
    } else {
        format!("grants revoked through the broker API by filter {filter:?}")
    };
    revoke_all(broker, removed, sessions, request_id, &reason).await
}

/// One lease to revoke at the source and record.
struct Revocation {
    lease: Lease,
    scope: Option<Scope>,
    session: Option<LiveSession>,
}

async fn revoke_all(
    broker: &Arc<Broker>,
    leases: Vec<Arc<Lease>>,
    sessions: Vec<TakenSession>,
    request_id: &str,
    reason: &str,
) -> Result<serde_json::Value, AdminError> {
    // The sessions were told to stop when they were taken; let them close their connections
    // (the agent reads the FATAL) before the lease goes at the source.
    let mut sessions = sessions;
    let waits = sessions.iter_mut().map(|s| s.wait_ended(SESSION_END_WAIT));
    for (ended, s) in futures::future::join_all(waits).await.into_iter().zip(&sessions) {
        if !ended {
            tracing::warn!(session = %s.session.session_id, lease_id = %s.session.lease.id, "the revoked database session did not end within 5 s; revoking its lease anyway");
        }
    }
    let mut all: Vec<Revocation> =
        sessions.into_iter().map(|s| Revocation { lease: s.session.lease.clone(), scope: Some(s.session.scope.clone()), session: Some(s.session) }).collect();
    all.extend(leases.into_iter().map(|l| Revocation { scope: broker.minted_scopes.get(&l.id), lease: (*l).clone(), session: None }));
    let mut revoked = Vec::with_capacity(all.len());
    let mut audit_errors = Vec::new();
    for Revocation { lease, scope, session } in all {
        let mut outcome = revoke_at_source(broker, &lease).await;
        let mut record = AuditRecord::new(AuditEvent::Revoke, request_id, &lease.identity.agent_id, &lease.identity.tenant);
        record.provider = Some(lease.provider.clone());
        record.lease_id = Some(lease.id.clone());
        record.credential_scope = Some(lease.credential_scope.clone());
        record.scope = scope;
        record.expiry = Some(rfc3339(lease.expires_at));
        let reason = match &session {
            Some(s) => format!("{reason}; database session {} ended", s.session_id),
            None => reason.to_string(),
        };
        record.reason = Some(match &outcome.provider_error {
            None => reason,
            Some(e) => format!("{reason}; the provider could not revoke it at the source: {e}"),
        });
        if let Some(s) = &session {
            record.route = Some(format!("database:{}", s.database));
            record.details.insert("session_id".into(), s.session_id.clone());
            outcome.kind = DATABASE_SESSION;
            outcome.session_id = Some(s.session_id.clone());
        }
        if let Err(e) = broker.audit(record).await {
            audit_errors.push(e.to_string());
        }
        broker.minted_scopes.forget(&lease.id);
        broker.metrics.revocations.inc();
        tracing::warn!(lease_id = %lease.id, kind = outcome.kind, provider = %lease.provider, agent_id = %lease.identity.agent_id, tenant = %lease.identity.tenant, provider_revoked = outcome.provider_revoked, "grant revoked");
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
    Revoked {
        id: lease.id.clone(),
        kind: CACHED_LEASE,
        provider: lease.provider.clone(),
        provider_revoked: result.is_ok(),
        provider_error: result.err().map(|e| e.message),
        session_id: None,
    }
}
