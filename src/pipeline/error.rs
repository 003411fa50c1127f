//! Every way a request can be refused, and the one place each becomes an HTTP answer.

use http::{header, Response, StatusCode};
use serde_json::json;

use super::aws_error::{self, AwsErrorProtocol};
use crate::upstream::{full, Body};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("no route for host {0}; the broker only forwards to configured hosts")]
    Unrouted(String),
    #[error("denied by policy: {0}")]
    Denied(String),
    #[error("request could not be classified: {0}")]
    Unclassified(String),
    /// An AWS request whose signed scope (service, region) contradicts the host it is sent to.
    #[error("signed scope refused: {0}")]
    SignedScopeMismatch(String),
    #[error("{0}")]
    NotPlaceholder(String),
    /// An AWS request whose signature is not a well-formed SigV4 signature by the placeholder key.
    #[error("{0}")]
    AgentSignature(String),
    #[error("refusing to send credentials for {0} over cleartext http; use https")]
    PlaintextRefused(String),
    #[error("credential minting failed for provider {provider}: {message}")]
    MintFailed { provider: String, message: String },
    #[error("the audit log cannot be written, so no credential is issued: {0}")]
    AuditUnavailable(String),
    #[error("upstream {0} did not answer in time")]
    UpstreamTimeout(String),
    #[error("upstream {host} failed: {reason}")]
    Upstream { host: String, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The path has no canonical form (see `classify::path`); nothing was decided or forwarded.
    #[error("request path {path:?} refused: {reason}")]
    UnsafePath { path: String, reason: crate::classify::path::PathError },
    /// A tunnel the broker cannot classify request by request (CONNECT inside an intercepted
    /// connection or on an endpoint, an upgrade on an AWS route).
    #[error("{0}")]
    TunnelRefused(String),
    #[error("bad CONNECT target {0:?}: expected host:port")]
    BadConnectTarget(String),
    #[error("this port is a forward proxy: send absolute-form requests (http://host/path) or CONNECT")]
    NotAProxyRequest,
    #[error("passthrough to {host} refused: {reason}")]
    PassthroughRefused { host: String, reason: String },
    #[error("no such path {0}")]
    NotFound(String),
    #[error("the request body is larger than {0} bytes, the most the broker buffers to sign it")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    IdentityRequired(String),
    #[error("{0}")]
    IdentityInvalid(String),
}

impl From<crate::identity::IdentityError> for BrokerError {
    fn from(e: crate::identity::IdentityError) -> Self {
        match e {
            crate::identity::IdentityError::Missing(m) => BrokerError::IdentityRequired(m),
            crate::identity::IdentityError::Invalid(m) => BrokerError::IdentityInvalid(m),
        }
    }
}

impl From<crate::inject::sigv4::AgentSignatureError> for BrokerError {
    fn from(e: crate::inject::sigv4::AgentSignatureError) -> Self {
        if e.is_real_credential() {
            BrokerError::NotPlaceholder(e.to_string())
        } else {
            BrokerError::AgentSignature(e.to_string())
        }
    }
}

impl BrokerError {
    fn status(&self) -> StatusCode {
        use BrokerError::*;
        match self {
            Unrouted(_)
            | Denied(_)
            | Unclassified(_)
            | SignedScopeMismatch(_)
            | NotPlaceholder(_)
            | AgentSignature(_)
            | PlaintextRefused(_)
            | IdentityInvalid(_)
            | PassthroughRefused { .. } => StatusCode::FORBIDDEN,
            IdentityRequired(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            MintFailed { .. } | AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Upstream { .. } => StatusCode::BAD_GATEWAY,
            BadRequest(_) | BadConnectTarget(_) | NotAProxyRequest | UnsafePath { .. } | TunnelRefused(_) => StatusCode::BAD_REQUEST,
            NotFound(_) => StatusCode::NOT_FOUND,
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Whether this is the broker refusing the request (4xx) rather than failing to serve it.
    pub fn is_refusal(&self) -> bool {
        self.status().is_client_error()
    }

    /// A short, stable code clients and tests can match on.
    pub fn code(&self) -> &'static str {
        use BrokerError::*;
        match self {
            Unrouted(_) => "unrouted_host",
            Denied(_) => "policy_denied",
            Unclassified(_) => "unclassified_request",
            SignedScopeMismatch(_) => "signed_scope_mismatch",
            NotPlaceholder(_) => "real_credential_refused",
            AgentSignature(_) => "agent_signature_refused",
            PlaintextRefused(_) => "plaintext_refused",
            MintFailed { .. } => "credential_minting_failed",
            AuditUnavailable(_) => "audit_unavailable",
            UpstreamTimeout(_) => "upstream_timeout",
            Upstream { .. } => "upstream_error",
            BadRequest(_) => "bad_request",
            UnsafePath { .. } => "unsafe_path",
            TunnelRefused(_) => "tunnel_refused",
            BadConnectTarget(_) => "bad_connect_target",
            NotAProxyRequest => "not_a_proxy_request",
            PassthroughRefused { .. } => "passthrough_refused",
            NotFound(_) => "not_found",
            PayloadTooLarge(_) => "payload_too_large",
            IdentityRequired(_) => "identity_required",
            IdentityInvalid(_) => "identity_invalid",
        }
    }

    /// The error code an AWS client of `protocol` expects for this refusal. Its status stays the
    /// broker's; the code only lets the SDK name it (and retry what AWS would have it retry).
    fn aws_code(&self, protocol: AwsErrorProtocol) -> &'static str {
        use AwsErrorProtocol::*;
        let status = self.status();
        match (protocol, status) {
            (Json, StatusCode::FORBIDDEN) => "AccessDeniedException",
            (_, StatusCode::FORBIDDEN) => "AccessDenied",
            (S3Xml, StatusCode::PAYLOAD_TOO_LARGE) => "EntityTooLarge",
            (Json, StatusCode::PAYLOAD_TOO_LARGE) => "RequestEntityTooLargeException",
            (Query, StatusCode::PAYLOAD_TOO_LARGE) => "RequestEntityTooLarge",
            (Json, StatusCode::SERVICE_UNAVAILABLE) => "ServiceUnavailableException",
            (_, StatusCode::SERVICE_UNAVAILABLE) => "ServiceUnavailable",
            (S3Xml, s) if s.is_server_error() => "InternalError",
            (_, s) if s.is_server_error() => "InternalFailure",
            (S3Xml, _) => "InvalidRequest",
            (Json, _) => "ValidationException",
            (Query, _) => "ValidationError",
        }
    }

    /// The answer on an AWS route: the same status, in the error format of `protocol`, with the
    /// reason, the broker's code and the request id in the message an SDK prints. A missing
    /// identity (407) stays the broker's own answer: its challenge is the proxy's, not the service's.
    pub fn into_aws_response(self, protocol: AwsErrorProtocol, request_id: &str) -> Response<Body> {
        if matches!(self, BrokerError::IdentityRequired(_)) {
            return self.into_response(request_id);
        }
        let status = self.status();
        let code = self.aws_code(protocol);
        let message = aws_error::message(&self.to_string(), self.code(), request_id);
        let (body, content_type, request_id_header) = match protocol {
            AwsErrorProtocol::S3Xml => (aws_error::s3_xml(code, &message, request_id), "application/xml", "x-amz-request-id"),
            AwsErrorProtocol::Query => (aws_error::query_xml(code, &message, request_id, !status.is_server_error()), "text/xml", "x-amzn-requestid"),
            AwsErrorProtocol::Json => (aws_error::json_body(code, &message), "application/json", "x-amzn-requestid"),
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        if protocol == AwsErrorProtocol::Json {
            headers.insert("x-amzn-errortype", http::HeaderValue::from_static(code));
        }
        if let Ok(v) = http::HeaderValue::from_str(request_id) {
            headers.insert(request_id_header, v.clone());
            headers.insert(super::REQUEST_ID_HEADER, v);
        }
        resp
    }

    /// The HTTP answer: status plus a JSON body naming the problem and the request id.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let body = json!({ "error": self.code(), "message": self.to_string(), "request_id": request_id });
        let challenge = matches!(self, BrokerError::IdentityRequired(_));
        let mut resp = Response::new(full(body.to_string()));
        if challenge {
            resp.headers_mut().insert(header::PROXY_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        if let Ok(v) = http::HeaderValue::from_str(request_id) {
            resp.headers_mut().insert(super::REQUEST_ID_HEADER, v);
        }
        resp
    }
}
