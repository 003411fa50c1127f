//! The request path, in stack order: audit guard → classify → authorize → credential → inject →
//! upstream. A request any stage cannot handle is refused; nothing is forwarded without its
//! credential.

mod aws;
pub mod aws_error;
mod credential;
pub mod error;
pub mod headers;
pub mod upstream;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

pub use error::BrokerError;

use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::classify::{self, Scope};
use crate::config::{HeaderInject, Inject, Route};
use crate::inject::header::check_placeholder;
use crate::policy::{effective_ttl, Decision, RequestFacts};
use crate::providers::Identity;
use crate::upstream::Body;

/// Response header carrying the broker's request id (also in every log line and audit record).
pub const REQUEST_ID_HEADER: &str = "x-credential-broker-request-id";

/// Where a request is going: the routed host it was sent to, or an endpoint's fixed upstream.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// Prefix of the upstream path (an endpoint's base URL path), without a trailing slash.
    pub base_path: String,
    pub route: Arc<Route>,
}

/// A fresh request id: time-ordered, so ids sort like the audit log.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Handle one request for a routed target. Never fails: errors become JSON answers, or on an AWS
/// route answers in the error format of the client's protocol.
pub async fn handle(broker: Arc<Broker>, target: Arc<Target>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = new_request_id();
    let span =
        tracing::info_span!("request", request_id = %request_id, route = %target.route.name, agent_id = tracing::field::Empty, tenant = tracing::field::Empty);
    let response = async {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // Decided before the request is consumed: a refusal is answered in the client's protocol.
        let aws_protocol = match &target.route.inject {
            Inject::SigV4(cfg) => aws_error::AwsErrorProtocol::of_request(&target, cfg, req.headers(), req.uri().query()),
            Inject::Header(_) => None,
        };
        let result = match broker.identities.for_request(req.extensions(), req.headers()).await {
            Ok(identity) => {
                tracing::Span::current().record("agent_id", identity.agent_id.as_str()).record("tenant", identity.tenant.as_str());
                process(&broker, &target, &identity, &request_id, req).await
            }
            Err(e) => {
                audit_identity_refusal(&broker, &request_id, Some(&target.route.name), &e);
                Err(BrokerError::from(e))
            }
        };
        match result {
            Ok(resp) => {
                broker.metrics.request(&target.route.name, "forwarded");
                tracing::info!(%method, host = %target.host, %path, status = resp.status().as_u16(), "forwarded");
                resp
            }
            Err(e) => {
                broker.metrics.request(&target.route.name, e.code());
                tracing::warn!(%method, host = %target.host, %path, error = %e, code = e.code(), "refused");
                match aws_protocol {
                    Some(protocol) => e.into_aws_response(protocol, &request_id),
                    None => e.into_response(&request_id),
                }
            }
        }
    }
    .instrument(span)
    .await;
    Ok(with_request_id(response, &request_id))
}

fn with_request_id(mut resp: Response<Body>, request_id: &str) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

async fn process(broker: &Arc<Broker>, target: &Target, identity: &Identity, request_id: &str, req: Request<Incoming>) -> Result<Response<Body>, BrokerError> {
    if req.headers().contains_key(http::header::CONTENT_LENGTH) && req.headers().contains_key(http::header::TRANSFER_ENCODING) {
        // Request smuggling guard: the two framings disagree about where the body ends.
        return Err(BrokerError::BadRequest("both Content-Length and Transfer-Encoding are set".into()));
    }
    let route = &target.route;
    if req.method() == http::Method::CONNECT {
        // HTTP/2 CONNECT (extended CONNECT with `:protocol` too) or an HTTP/1 CONNECT inside an
        // intercepted connection or on an endpoint: a tunnel whose requests could not be seen.
        let e =
            BrokerError::TunnelRefused("CONNECT is only accepted by the forward proxy itself, not inside an intercepted connection or on an endpoint".into());
        return refuse(broker, identity, route, request_id, None, e).await;
    }
    match &route.inject {
        Inject::Header(inject) => {
            let path = match canonical_target_path(&target.base_path, req.uri().path()) {
                Ok(p) => p,
                Err(e) => return refuse(broker, identity, route, request_id, None, e).await,
            };
            process_header_route(broker, target, identity, request_id, req, path, inject).await
        }
        // S3 keys are literal, so the AWS stage decides per service which path form it uses.
        Inject::SigV4(sigv4) => aws::process(broker, target, identity, request_id, req, sigv4).await,
    }
}

/// The path that is classified, decided on and forwarded: the request's own path made canonical
/// on its own (so `..` cannot climb out of an endpoint's base path), then the base path prepended.
pub(crate) fn canonical_target_path(base_path: &str, raw: &str) -> Result<String, BrokerError> {
    let canonical = classify::path::canonical_path(raw).map_err(|reason| BrokerError::UnsafePath { path: raw.to_string(), reason })?;
    Ok(format!("{base_path}{canonical}"))
}

/// Audit a refusal as a deny (its code in `details.code`) and return it.
pub(crate) async fn refuse(
    broker: &Broker,
    identity: &Identity,
    route: &Route,
    request_id: &str,
    scope: Option<Scope>,
    e: BrokerError,
) -> Result<Response<Body>, BrokerError> {
    let mut record = denial(identity, route, request_id, scope, e.to_string());
    record.details.insert("code".into(), e.code().into());
    audit(broker, record).await?;
    Err(e)
}

async fn process_header_route(
    broker: &Arc<Broker>,
    target: &Target,
    identity: &Identity,
    request_id: &str,
    req: Request<Incoming>,
    path: String,
    inject: &HeaderInject,
) -> Result<Response<Body>, BrokerError> {
    let route = &target.route;
    let upgrade = match upgrade_protocol(req.headers()) {
        Ok(u) => u,
        Err(e) => return refuse(broker, identity, route, request_id, None, e).await,
    };
    // A tunnel is its own action: allowing GET on a resource does not allow a WebSocket on it,
    // whose messages the broker never sees.
    let action = if upgrade.is_some() { "UPGRADE" } else { req.method().as_str() };
    let mut facts = request_facts(target, request_id, req.method(), &path);
    facts.upgrade = upgrade;
    let scope = match classify::http::classify(action, target.scheme, &target.host, &path) {
        Ok(s) => s,
        Err(e) => {
            audit(broker, denial(identity, route, request_id, None, e.reason.clone())).await?;
            return Err(BrokerError::Unclassified(e.reason));
        }
    };
    let decision = authorize(broker, identity, route, &facts, &scope).await?;

    // Checked before minting: a request that will be refused must not cause an issuance.
    if let Err(e) = check_placeholder(req.headers(), inject) {
        audit(broker, denial(identity, route, request_id, Some(scope), e.to_string())).await?;
        return Err(BrokerError::NotPlaceholder(e.to_string()));
    }

    let ttl = effective_ttl(&decision, broker.config.credentials.default_ttl);
    let lease = credential::obtain(broker, identity, route, &scope, &facts, ttl, &decision.reason).await?;
    upstream::forward(broker, target, req, &path, &lease, inject).await
}

/// The protocol an upgrade request asks for, lower-cased; `None` for an ordinary request. An
/// upgrade must name exactly one protocol: offered several, the upstream would pick one the
/// policy did not see.
pub(crate) fn upgrade_protocol(headers: &http::HeaderMap) -> Result<Option<String>, BrokerError> {
    if !headers::is_upgrade(headers) {
        return Ok(None);
    }
    let mut offered = Vec::new();
    for value in headers.get_all(http::header::UPGRADE) {
        let value = value.to_str().map_err(|_| BrokerError::BadRequest("the Upgrade header is not ASCII".into()))?;
        offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_ascii_lowercase));
    }
    match offered.as_slice() {
        [one] => Ok(Some(one.clone())),
        _ => Err(BrokerError::BadRequest(format!("an upgrade must offer exactly one protocol, not {offered:?}"))),
    }
}

fn request_facts(target: &Target, request_id: &str, method: &http::Method, path: &str) -> RequestFacts {
    RequestFacts {
        id: request_id.to_string(),
        protocol: target.scheme.to_string(),
        method: method.to_string(),
        host: target.host.clone(),
        path: path.to_string(),
        upgrade: None,
    }
}

/// The audit record of a refusal.
fn denial(identity: &Identity, route: &Route, request_id: &str, scope: Option<Scope>, reason: String) -> AuditRecord {
    let mut r = AuditRecord::new(AuditEvent::Deny, request_id, &identity.agent_id, &identity.tenant);
    r.route = Some(route.name.clone());
    r.scope = scope;
    r.decision = Some("deny".into());
    r.reason = Some(reason);
    r
}

/// Record an identity refusal (407/403) as a `deny`, so failed identity attempts show in the
/// audit. Only what is known is written: the reason, never the token. Anyone who can reach a
/// listener can cause these, so they go through the rate-limited refusal auditor (a burst
/// written one by one, the rest counted) and never wait for an fsync.
pub(crate) fn audit_identity_refusal(broker: &Broker, request_id: &str, route: Option<&str>, e: &crate::identity::IdentityError) {
    let code = match e {
        crate::identity::IdentityError::Missing(_) => "identity_required",
        crate::identity::IdentityError::Invalid(_) => "identity_invalid",
    };
    let reason = e.to_string();
    let mut refusal = crate::audit::Refusal::new(code, route.unwrap_or("proxy"), request_id, &reason);
    refusal.route = route;
    broker.refusals.record(refusal);
}

/// Ask the policy; a deny is audited and becomes a 403 with the policy's reason.
async fn authorize(broker: &Broker, identity: &Identity, route: &Route, facts: &RequestFacts, scope: &Scope) -> Result<Decision, BrokerError> {
    let decision = broker.policy.decide(identity, facts, scope);
    broker.metrics.policy_decision(decision.allow);
    if !decision.allow {
        let mut record = denial(identity, route, &facts.id, Some(scope.clone()), decision.reason.clone());
        if let Some(protocol) = &facts.upgrade {
            record.details.insert("upgrade".into(), protocol.clone());
        }
        audit(broker, record).await?;
        return Err(BrokerError::Denied(decision.reason));
    }
    Ok(decision)
}

/// Write an audit record; if it cannot be written the request fails closed.
pub(crate) async fn audit(broker: &Broker, record: AuditRecord) -> Result<u64, BrokerError> {
    broker.audit(record).await.map_err(|e| BrokerError::AuditUnavailable(e.to_string()))
}
