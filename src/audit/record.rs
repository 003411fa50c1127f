//! What one audit record holds.

use serde::Serialize;

use crate::classify::Scope;

/// What happened.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A credential was minted.
    Issue,
    /// A request was allowed and given a credential (minted or cached).
    Allow,
    /// A request was refused (policy, placeholder check, unclassified…).
    Deny,
    /// A request was refused because the credential could not be had (fail closed).
    Error,
    /// A lease was revoked.
    Revoke,
    /// A long-lived secret was rotated through the broker API.
    Rotate,
    /// A lease still in use (an open database session's) was extended by its provider.
    Renew,
}

/// One record, before it is chained. Field order is the order on disk.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub event: AuditEvent,
    pub request_id: String,
    pub agent_id: String,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// What the credential grants, in the provider's terms (OAuth scopes, session policy…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// RFC 3339 time the credential stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// Non-secret facts of an issuance from the provider (role ARN, source identity…).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
}

impl AuditRecord {
    /// A record with only the fields every record has.
    pub fn new(event: AuditEvent, request_id: &str, agent_id: &str, tenant: &str) -> Self {
        AuditRecord {
            event,
            request_id: request_id.into(),
            agent_id: agent_id.into(),
            tenant: tenant.into(),
            route: None,
            scope: None,
            credential_scope: None,
            decision: None,
            reason: None,
            provider: None,
            lease_id: None,
            expiry: None,
            details: Default::default(),
        }
    }
}

/// The record as written: sequence number, time and the previous record's hash come first.
#[derive(Serialize)]
pub(crate) struct ChainedRecord<'a> {
    pub seq: u64,
    pub timestamp: String,
    pub prev_hash: &'a str,
    #[serde(flatten)]
    pub record: &'a AuditRecord,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}
