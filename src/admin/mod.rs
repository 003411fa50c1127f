//! The admin listener: health, readiness, Prometheus metrics and the broker API (`/v1/*`).
//! Never served on the agent-facing ports.
//!
//! `/healthz`, `/readyz` and `/metrics` need no token: probes and scrapers must reach them, and
//! none of them reveals a grant, an identity or a secret. Everything under `/v1/` needs the bearer
//! token from `admin.token_file`; without one configured the broker API is off (403).

pub mod auth;
pub mod client;
mod error;
pub mod grants;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

pub use error::AdminError;

use crate::audit::refusals::Refusal;
use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::pipeline::new_request_id;
use crate::upstream::{full, Body};

/// The largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every endpoint the admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    ListGrants,
    RevokeGrant,
    RevokeGrants,
    RotateSecret,
    ReloadPolicy,
}

/// (method, OpenAPI path template, endpoint): the router's table, also checked against
/// `docs/admin-api.yaml` by a test.
pub const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/healthz", Endpoint::Healthz),
    ("GET", "/readyz", Endpoint::Readyz),
    ("GET", "/metrics", Endpoint::Metrics),
    ("GET", "/v1/grants", Endpoint::ListGrants),
    ("POST", "/v1/grants/{id}/revoke", Endpoint::RevokeGrant),
    ("POST", "/v1/grants/revoke", Endpoint::RevokeGrants),
    ("POST", "/v1/secrets/{id}/rotate", Endpoint::RotateSecret),
    ("POST", "/v1/policy/reload", Endpoint::ReloadPolicy),
];

impl Endpoint {
    /// A metrics label: the path template.
    fn label(self) -> &'static str {
        ROUTES.iter().find(|(_, _, e)| *e == self).map_or("unknown", |(_, p, _)| p)
    }
}

/// Match a path against the table: the endpoint, its methods, and the `{id}` if the template has one.
fn match_path(path: &str) -> Option<(Endpoint, &'static str, Option<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().find_map(|(method, template, endpoint)| {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut id = None;
        for (t, s) in parts.iter().zip(&segments) {
            if *t == "{id}" {
                if s.is_empty() {
                    return None;
                }
                id = Some(percent_decode(s)?);
            } else if t != s {
                return None;
            }
        }
        Some((*endpoint, *method, id))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned())
}

/// Serve one admin request from `peer`.
pub async fn handle(broker: Arc<Broker>, peer: Option<IpAddr>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = new_request_id();
    let matched = match_path(req.uri().path());
    let endpoint = matched.as_ref().map_or("unmatched", |(e, _, _)| e.label());
    let path = bounded_path(req.uri().path());
    let resp = match route(&broker, req, matched, &request_id).await {
        Ok(resp) => resp,
        Err(e) => {
            match e.refusal_code() {
                // Audited (and logged) rate-limited: anyone who reaches the port can cause these.
                Some(code) => broker.refusals.record(Refusal {
                    peer,
                    route: Some(endpoint),
                    target: Some(&path),
                    ..Refusal::new(code, "admin", &request_id, &e.to_string())
                }),
                None if e.status().is_server_error() => {
                    tracing::warn!(request_id = %request_id, endpoint, error = %e, code = e.code(), "admin request failed")
                }
                None => {}
            }
            e.into_response(&request_id)
        }
    };
    broker.metrics.admin_requests.get_or_create(&crate::metrics::AdminLabel { endpoint, status: resp.status().as_u16() }).inc();
    Ok(resp)
}

/// The longest request path an audit record of a refused admin request keeps.
const MAX_AUDITED_PATH: usize = 256;

/// The request path for the audit record, cut to [`MAX_AUDITED_PATH`] (the path is the caller's
/// and could be long; the query, which might carry anything, is never kept).
fn bounded_path(path: &str) -> String {
    let mut cut = path.len().min(MAX_AUDITED_PATH);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    path[..cut].to_string()
}

async fn route(
    broker: &Arc<Broker>,
    req: Request<Incoming>,
    matched: Option<(Endpoint, &'static str, Option<String>)>,
    request_id: &str,
) -> Result<Response<Body>, AdminError> {
    let path = req.uri().path().to_string();
    let Some((endpoint, method, id)) = matched else { return Err(AdminError::NotFound(path)) };
    if endpoint == Endpoint::Metrics && !broker.config.admin.metrics {
        return Err(AdminError::NotFound(path));
    }
    if path.starts_with("/v1/") {
        let token = broker.admin_token.as_ref().ok_or(AdminError::Disabled)?;
        token.check(req.headers().get(http::header::AUTHORIZATION)).map_err(|d| match d {
            auth::Denied::Missing => AdminError::Unauthenticated,
            auth::Denied::Wrong => AdminError::WrongToken,
        })?;
    }
    if req.method().as_str() != method {
        return Err(AdminError::MethodNotAllowed(req.method().to_string()));
    }
    let id = id.unwrap_or_default();
    let ok = |body: serde_json::Value| Ok(error::json(StatusCode::OK, &body, request_id));
    match endpoint {
        Endpoint::Healthz => ok(json!({"status": "ok"})),
        Endpoint::Readyz if broker.is_ready() => ok(json!({"status": "ready"})),
        Endpoint::Readyz => Ok(error::json(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "not ready"}), request_id)),
        Endpoint::Metrics => Ok(metrics(broker)),
        Endpoint::ListGrants => ok(grants::list(broker)),
        Endpoint::RevokeGrant => ok(grants::revoke_one(broker, &id, request_id).await?),
        Endpoint::RevokeGrants => {
            let filter: grants::RevokeFilter = json_body(req).await?;
            ok(grants::revoke_matching(broker, filter, request_id).await?)
        }
        Endpoint::RotateSecret => {
            let body: RotateRequest = json_body(req).await?;
            ok(rotate(broker, &id, &body.provider, request_id).await?)
        }
        Endpoint::ReloadPolicy => ok(reload_policy(broker)?),
    }
}

fn metrics(broker: &Broker) -> Response<Body> {
    broker.metrics.active_leases.set(broker.cache.leases().len() as i64);
    broker.metrics.database_sessions.set(broker.sessions.len() as i64);
    let mut resp = Response::new(full(broker.metrics.encode()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    resp
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, AdminError> {
    let body: Bytes = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| AdminError::BadRequest(format!("cannot read the body (at most {MAX_BODY_BYTES} bytes): {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| AdminError::BadRequest(format!("body is not the expected JSON: {e}")))
}

/// `POST /v1/secrets/{id}/rotate`: which provider manages the secret.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    provider: String,
}

async fn rotate(broker: &Broker, secret_id: &str, provider_name: &str, request_id: &str) -> Result<serde_json::Value, AdminError> {
    let provider = broker.providers.get(provider_name).ok_or_else(|| AdminError::UnknownProvider(provider_name.to_string()))?;
    // Rotate, then drop every cached lease of this provider so the old value is never served again.
    let result = crate::providers::rotation::rotate_and_drop(provider.as_ref(), &broker.cache, secret_id).await;
    let dropped = result.as_ref().map(Vec::len).unwrap_or(0);
    let result = result.map(|_| ());
    let mut record = AuditRecord::new(AuditEvent::Rotate, request_id, &broker.identity.agent_id, &broker.identity.tenant);
    record.provider = Some(provider_name.to_string());
    record.decision = Some(if result.is_ok() { "rotated" } else { "failed" }.into());
    record.reason = Some(match &result {
        Ok(()) => format!("secret {secret_id} rotated through the broker API"),
        Err(e) => format!("rotating secret {secret_id} failed: {e}"),
    });
    broker.audit(record).await.map_err(|e| AdminError::AuditUnavailable(e.to_string()))?;
    match result {
        Ok(()) => Ok(json!({"rotated": secret_id, "provider": provider_name, "cached_leases_dropped": dropped})),
        Err(e) if e.retryable => Err(AdminError::ProviderUnavailable { provider: provider_name.into(), message: e.message }),
        Err(e) => Err(AdminError::ProviderRefused { provider: provider_name.into(), message: e.message }),
    }
}

fn reload_policy(broker: &Broker) -> Result<serde_json::Value, AdminError> {
    let changed = broker.policy.reload_if_changed().map_err(|e| AdminError::PolicyRejected(e.to_string()))?;
    if changed {
        tracing::info!(file = %broker.policy.file().display(), "policy reloaded through the broker API");
    }
    Ok(json!({"reloaded": changed, "file": broker.policy.file().display().to_string()}))
}

#[cfg(test)]
mod tests;
