//! The credential stage: cached lease or a fresh mint (retried, audited, alerted on failure).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::{audit, BrokerError};
use crate::audit::record::rfc3339;
use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::classify::Scope;
use crate::config::Route;
use crate::policy::RequestFacts;
use crate::providers::cache::{CacheKey, Source};
use crate::providers::retry::{with_retries, MintFailure};
use crate::providers::{Identity, Lease, MintRequest, ProviderError};

/// A lease for this request, recorded in the audit log before it is returned.
pub(super) async fn obtain(
    broker: &Arc<Broker>,
    identity: &Identity,
    route: &Route,
    scope: &Scope,
    facts: &RequestFacts,
    ttl: Duration,
    reason: &str,
) -> Result<Arc<Lease>, BrokerError> {
    let (method, request_id) = (facts.method.as_str(), facts.id.as_str());
    let provider = broker
        .providers
        .get(&route.provider)
        .cloned()
        .ok_or_else(|| BrokerError::MintFailed { provider: route.provider.clone(), message: "provider is not configured".into() })?;
    let credential_scope = provider.credential_scope(scope, method);
    let key = CacheKey {
        agent_id: identity.agent_id.clone(),
        tenant: identity.tenant.clone(),
        provider: provider.name().to_string(),
        credential_scope: credential_scope.clone(),
    };
    let mint_request = MintRequest { identity: identity.clone(), scope: scope.clone(), credential_scope, ttl, request_id: request_id.into() };
    let (b, route_name) = (broker.clone(), route.name.clone());
    let result = broker.cache.get_or_mint(key, move || mint_and_record(b, provider, mint_request, route_name).boxed()).await;
    broker.metrics.cache_lookup(matches!(result, Ok((_, Source::Cached))));

    let mut record = AuditRecord::new(AuditEvent::Allow, request_id, &identity.agent_id, &identity.tenant);
    record.route = Some(route.name.clone());
    record.scope = Some(scope.clone());
    record.provider = Some(route.provider.clone());
    if let Some(protocol) = &facts.upgrade {
        record.details.insert("upgrade".into(), protocol.clone());
    }
    match result {
        Ok((lease, source)) => {
            record.decision = Some("allow".into());
            record.reason = Some(reason.to_string());
            record.lease_id = Some(lease.id.clone());
            record.credential_scope = Some(lease.credential_scope.clone());
            record.expiry = Some(rfc3339(lease.expires_at));
            tracing::debug!(lease_id = %lease.id, cached = source == Source::Cached, "credential ready");
            // The issuance itself was made durable before anyone could use the lease; this record
            // of one more use rides the next fsync batch instead of adding a disk flush here.
            broker.audit.append_in_background(record).map_err(|e| BrokerError::AuditUnavailable(e.to_string()))?;
            Ok(lease)
        }
        Err(failure) => {
            record.event = AuditEvent::Error;
            record.decision = Some("error".into());
            record.reason = Some(failure.to_string());
            audit(broker, record).await?;
            Err(BrokerError::MintFailed { provider: route.provider.clone(), message: failure.to_string() })
        }
    }
}

/// Mint with retries; on success record the issuance durably before anyone may use it; on
/// failure raise the alert. Runs in its own task (see the cache).
async fn mint_and_record(broker: Arc<Broker>, provider: crate::providers::SharedProvider, req: MintRequest, route: String) -> Result<Lease, MintFailure> {
    let retry = broker.config.credentials.retry;
    let started = std::time::Instant::now();
    let minted = with_retries(&retry, |attempt| {
        if attempt > 0 {
            broker.metrics.mint_retry(provider.name());
        }
        provider.mint(&req)
    })
    .await;
    broker.metrics.mint_observed(provider.name(), started.elapsed());
    let lease = match minted {
        Ok(lease) => {
            broker.alerts.minting_recovered(provider.name());
            lease
        }
        Err(failure) => {
            broker.alerts.minting_failure(provider.name(), &req.identity.agent_id, &req.identity.tenant, failure.attempts, &failure.last_error.message);
            return Err(failure);
        }
    };
    let mut record = AuditRecord::new(AuditEvent::Issue, &req.request_id, &req.identity.agent_id, &req.identity.tenant);
    record.route = Some(route);
    // Only an allowed request ever reaches minting; the record says so on its own.
    record.decision = Some("allow".into());
    record.scope = Some(req.scope.clone());
    record.credential_scope = Some(lease.credential_scope.clone());
    record.provider = Some(provider.name().to_string());
    record.lease_id = Some(lease.id.clone());
    record.expiry = Some(rfc3339(lease.expires_at));
    record.details = lease.details.clone();
    if let Err(e) = broker.audit(record).await {
        // An issuance that cannot be recorded must not be used; take it back where possible.
        if let Err(revoke) = provider.revoke(&lease).await {
            tracing::error!(lease_id = %lease.id, error = %revoke, "revoking an unrecorded credential failed");
        }
        return Err(MintFailure { attempts: 1, last_error: ProviderError::permanent(e.to_string()) });
    }
    broker.minted_scopes.record(&lease.id, &req.scope, &broker);
    tracing::info!(lease_id = %lease.id, provider = provider.name(), expiry = %rfc3339(lease.expires_at), "credential issued");
    Ok(lease)
}
