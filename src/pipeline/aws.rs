//! AWS routes: the request becomes an exact IAM action on an exact resource, the policy decides,
//! STS mints a session allowing only that, and the request is re-signed with it.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{audit, authorize, credential, denial, request_facts, upstream, BrokerError, Target};
use crate::broker::Broker;
use crate::classify::aws::{classify, decide_endpoint, is_credential_vending, AwsRequest, DecideError, Endpoint, SignedFor};
use crate::config::SigV4Inject;
use crate::inject::sigv4::{self, Payload, SigV4Error};
use crate::policy::effective_ttl;
use crate::providers::Identity;
use crate::upstream::{boxed, full, Body};

pub(super) async fn process(
    broker: &Arc<Broker>,
    target: &Target,
    identity: &Identity,
    request_id: &str,
    req: Request<Incoming>,
    cfg: &SigV4Inject,
) -> Result<Response<Body>, BrokerError> {
    let route = &target.route;
    let refuse = |scope, reason: String, err: BrokerError| async move {
        audit(broker, denial(identity, route, request_id, scope, reason)).await?;
        Err::<Response<Body>, _>(err)
    };

    // Before anything else: only a well-formed SigV4 signature by the placeholder key goes on. A
    // real key, a session token, another signature scheme or no signature at all is refused (403)
    // and audited with its code.
    let signed_for = match sigv4::check_agent_signature(req.headers(), req.uri().query(), &cfg.placeholder_access_key_id) {
        Ok(signed) => signed,
        Err(e) => return refuse_with_code(broker, identity, route, request_id, BrokerError::from(e)).await,
    };
    // The service and region: the host's, which the signed scope must agree with; on a custom
    // endpoint that leaves them open, the signed scope's.
    let authority = if target.port == 443 { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
    let signed = SignedFor { service: &signed_for.service, region: &signed_for.region };
    let endpoint = match decide_endpoint(&authority, &cfg.custom_endpoints, signed) {
        Ok(endpoint) => endpoint,
        Err(e @ (DecideError::UnknownHost(_) | DecideError::UnknownService(_))) => {
            let err = BrokerError::Unclassified(format!("unclassified AWS request: {e}"));
            return refuse_with_code(broker, identity, route, request_id, err).await;
        }
        Err(DecideError::Mismatch(reason)) => {
            return refuse_with_code(broker, identity, route, request_id, BrokerError::SignedScopeMismatch(reason)).await;
        }
    };
    if super::headers::is_upgrade(req.headers()) {
        // Dropping the Upgrade header would answer an upgrade with something else; say why instead.
        let e = BrokerError::TunnelRefused(
            "protocol upgrades are not supported on AWS routes: the broker signs each request and cannot see inside a tunnel".into(),
        );
        return super::refuse(broker, identity, route, request_id, None, e).await;
    }
    let path = match request_path(&target.base_path, &endpoint, req.uri().path()) {
        Ok(p) => p,
        Err(e) => return super::refuse(broker, identity, route, request_id, None, e).await,
    };

    let (mut parts, body) = req.into_parts();
    let query = parts.uri.query().map(str::to_string);
    let body = if needs_buffered_body(&endpoint, &parts.method, query.as_deref()) {
        AwsBody::Buffered(buffer(body, cfg.max_buffered_body_bytes).await?)
    } else {
        AwsBody::Streamed(body)
    };
    let classified = classify(
        &AwsRequest { method: &parts.method, path: &path, query: query.as_deref(), headers: &parts.headers, body: body.bytes() },
        &endpoint,
        &cfg.account_id,
    );
    let scope = match classified {
        Ok(scope) => scope,
        Err(e) => {
            // The classifier's reason already says "unclassified AWS request: …".
            return refuse(None, e.reason.clone(), BrokerError::Unclassified(e.reason)).await;
        }
    };
    // Credential-vending calls would hand the agent real keys; no policy can allow them here.
    if let Some(p) = scope.permissions.iter().find(|p| is_credential_vending(&p.action)) {
        let reason = format!("{} vends credentials; agents may not obtain AWS credentials through the broker", p.action);
        return refuse(Some(scope.clone()), reason.clone(), BrokerError::Denied(reason)).await;
    }
    let facts = request_facts(target, request_id, &parts.method, &path);
    let decision = authorize(broker, identity, route, &facts, &scope).await?;

    // `Bytes` clones share the buffer: one copy for the hash, one for the wire.
    let buffered = body.shared();
    let payload = match &buffered {
        Some(bytes) => Payload::Buffered(bytes),
        None => match sigv4::s3_client_payload(&parts.headers) {
            Ok(p) => p,
            Err(e) => return refuse(Some(scope), e.to_string(), BrokerError::BadRequest(e.to_string())).await,
        },
    };
    let ttl = effective_ttl(&decision, broker.config.credentials.default_ttl);
    let lease = credential::obtain(broker, identity, route, &scope, &facts, ttl, &decision.reason).await?;

    let query = sigv4::strip_agent_signature(&mut parts.headers, query.as_deref());
    upstream::prepare_head(target, &mut parts, &path, query.as_deref(), false)?;
    let body = match body {
        AwsBody::Buffered(bytes) => {
            // The length is known; say so rather than let the client chunk what S3/SQS will hash.
            parts.headers.insert(http::header::CONTENT_LENGTH, bytes.len().into());
            full(bytes)
        }
        AwsBody::Streamed(incoming) => boxed(incoming),
    };
    let mut request = Request::from_parts(parts, body);
    sigv4::sign_request(&mut request, &lease.credential, &endpoint.service, &endpoint.region, &payload).map_err(|e| match e {
        SigV4Error::Signing(reason) | SigV4Error::SignedChunks(reason) => BrokerError::BadRequest(reason),
        other => BrokerError::Upstream { host: target.host.clone(), reason: other.to_string() },
    })?;
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Only the header names: the Authorization value names the session's key id.
        let signed = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split("SignedHeaders=").nth(1));
        let signed = signed.map(|s| s.split(',').next().unwrap_or_default().to_string()).unwrap_or_default();
        tracing::debug!(service = %endpoint.service, region = %endpoint.region, signed_headers = %signed, "re-signed with the minted session");
    }
    upstream::send(broker, target, request, None).await
}

/// Refuse before classification, auditing the refusal with its code (no scope was named yet).
async fn refuse_with_code(
    broker: &Arc<Broker>,
    identity: &Identity,
    route: &crate::config::Route,
    request_id: &str,
    err: BrokerError,
) -> Result<Response<Body>, BrokerError> {
    let mut record = denial(identity, route, request_id, None, err.to_string());
    record.details.insert("code".into(), err.code().into());
    audit(broker, record).await?;
    Err(err)
}

/// The path classified and forwarded. S3 keys are literal (`/bucket/a/../b.txt` names the key
/// `a/../b.txt`, and S3 serves exactly that key), so an S3 path goes as sent and the classifier
/// names that key; every other service's path is made canonical like a header route's.
fn request_path(base_path: &str, endpoint: &Endpoint, raw: &str) -> Result<String, BrokerError> {
    if endpoint.service == "s3" {
        return Ok(format!("{base_path}{raw}"));
    }
    super::canonical_target_path(base_path, raw)
}

enum AwsBody {
    Buffered(Bytes),
    Streamed(Incoming),
}

impl AwsBody {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            AwsBody::Buffered(b) => Some(b),
            AwsBody::Streamed(_) => None,
        }
    }

    fn shared(&self) -> Option<Bytes> {
        match self {
            AwsBody::Buffered(b) => Some(b.clone()),
            AwsBody::Streamed(_) => None,
        }
    }
}

/// S3 bodies stream (uploads of any size, signed as the client declared); every other protocol
/// carries the resource in the body and needs its hash for the signature. S3 `DeleteObjects`
/// names its keys in the body.
fn needs_buffered_body(endpoint: &Endpoint, method: &http::Method, query: Option<&str>) -> bool {
    if endpoint.service != "s3" {
        return true;
    }
    *method == http::Method::POST && query.is_some_and(|q| q.split('&').any(|p| p == "delete" || p.starts_with("delete=")))
}

async fn buffer(body: Incoming, cap: usize) -> Result<Bytes, BrokerError> {
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BrokerError::PayloadTooLarge(cap)),
        Err(e) => Err(BrokerError::BadRequest(format!("reading the request body: {e}"))),
    }
}

#[cfg(test)]
#[path = "aws_tests.rs"]
mod tests;
