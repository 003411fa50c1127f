//! The request path, in stack order: audit guard → classify → authorize → credential → inject →
//! upstream. A request any stage cannot handle is refused; nothing is forwarded without its
//! credential.

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
use crate::config::Route;
use crate::inject::header::check_placeholder;
use crate::policy::{effective_ttl, RequestFacts};
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

/// Handle one request for a routed target. Never fails: errors become JSON answers.
pub async fn handle(broker: Arc<Broker>, target: Arc<Target>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = new_request_id();
    let span = tracing::info_span!("request", request_id = %request_id, route = %target.route.name);
    let response = async {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let result = process(&broker, &target, &request_id, req).await;
        match result {
            Ok(resp) => {
                tracing::info!(%method, host = %target.host, %path, status = resp.status().as_u16(), "forwarded");
                resp
            }
            Err(e) => {
                tracing::warn!(%method, host = %target.host, %path, error = %e, code = e.code(), "refused");
                e.into_response(&request_id)
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

async fn process(broker: &Arc<Broker>, target: &Target, request_id: &str, req: Request<Incoming>) -> Result<Response<Body>, BrokerError> {
    if req.headers().contains_key(http::header::CONTENT_LENGTH) && req.headers().contains_key(http::header::TRANSFER_ENCODING) {
        // Request smuggling guard: the two framings disagree about where the body ends.
        return Err(BrokerError::BadRequest("both Content-Length and Transfer-Encoding are set".into()));
    }
    let route = &target.route;
    let path = format!("{}{}", target.base_path, req.uri().path());
    let facts = RequestFacts {
        id: request_id.to_string(),
        protocol: target.scheme.to_string(),
        method: req.method().to_string(),
        host: target.host.clone(),
        path: path.clone(),
    };
    let denial = |scope: Option<Scope>, reason: String| {
        let mut r = AuditRecord::new(AuditEvent::Deny, request_id, &broker.identity.agent_id, &broker.identity.tenant);
        r.route = Some(route.name.clone());
        r.scope = scope;
        r.decision = Some("deny".into());
        r.reason = Some(reason);
        r
    };

    let scope = match classify::http::classify(req.method().as_str(), target.scheme, &target.host, &path) {
        Ok(s) => s,
        Err(e) => {
            audit(broker, denial(None, e.reason.clone())).await?;
            return Err(BrokerError::Unclassified(e.reason));
        }
    };

    let decision = broker.policy.decide(&broker.identity, &facts, &scope);
    if !decision.allow {
        audit(broker, denial(Some(scope), decision.reason.clone())).await?;
        return Err(BrokerError::Denied(decision.reason));
    }

    // Checked before minting: a request that will be refused must not cause an issuance.
    if let Err(e) = check_placeholder(req.headers(), &route.inject) {
        audit(broker, denial(Some(scope), e.to_string())).await?;
        return Err(BrokerError::NotPlaceholder(e.to_string()));
    }

    let ttl = effective_ttl(&decision, broker.config.credentials.default_ttl);
    let lease = credential::obtain(broker, route, &scope, req.method().as_str(), ttl, request_id, &decision.reason).await?;
    upstream::forward(broker, target, req, &path, &lease).await
}

/// Write an audit record; if it cannot be written the request fails closed.
pub(crate) async fn audit(broker: &Broker, record: AuditRecord) -> Result<u64, BrokerError> {
    broker.audit(record).await.map_err(|e| BrokerError::AuditUnavailable(e.to_string()))
}
