//! Every way an admin request can fail, and its JSON answer (`{error, message, request_id}`, as on
//! the proxy port).

use http::{header, Response, StatusCode};
use serde_json::json;

use crate::pipeline::REQUEST_ID_HEADER;
use crate::upstream::{full, Body};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the broker API is disabled: set admin.token_file to enable it")]
    Disabled,
    #[error("send the admin token as 'Authorization: Bearer <token>'")]
    Unauthenticated,
    #[error("the admin token is not valid")]
    WrongToken,
    #[error("no such path {0}")]
    NotFound(String),
    #[error("{0} is not allowed on this path")]
    MethodNotAllowed(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no grant with id {0}")]
    UnknownGrant(String),
    #[error("no provider named {0}")]
    UnknownProvider(String),
    #[error("provider {provider} refused: {message}")]
    ProviderRefused { provider: String, message: String },
    #[error("provider {provider} failed: {message}")]
    ProviderUnavailable { provider: String, message: String },
    #[error("the new policy was rejected; the previous one stays in force: {0}")]
    PolicyRejected(String),
    #[error("{0}")]
    AuditUnavailable(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        use AdminError::*;
        match self {
            Disabled | WrongToken => StatusCode::FORBIDDEN,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            NotFound(_) | UnknownGrant(_) | UnknownProvider(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            ProviderRefused { .. } | PolicyRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ProviderUnavailable { .. } => StatusCode::BAD_GATEWAY,
            AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable code clients can match on.
    pub fn code(&self) -> &'static str {
        use AdminError::*;
        match self {
            Disabled => "admin_api_disabled",
            Unauthenticated => "unauthenticated",
            WrongToken => "forbidden",
            NotFound(_) => "not_found",
            MethodNotAllowed(_) => "method_not_allowed",
            BadRequest(_) => "bad_request",
            UnknownGrant(_) => "unknown_grant",
            UnknownProvider(_) => "unknown_provider",
            ProviderRefused { .. } => "provider_refused",
            ProviderUnavailable { .. } => "provider_unavailable",
            PolicyRejected(_) => "policy_rejected",
            AuditUnavailable(_) => "audit_unavailable",
        }
    }

    /// The refusal code of an answer that turns a caller away from the broker API (401/403),
    /// which is audited as a refusal; `None` for every other answer.
    pub fn refusal_code(&self) -> Option<&'static str> {
        match self {
            AdminError::Unauthenticated => Some("admin_unauthorized"),
            AdminError::WrongToken => Some("admin_forbidden"),
            AdminError::Disabled => Some("admin_api_disabled"),
            _ => None,
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let body = json!({ "error": self.code(), "message": self.to_string(), "request_id": request_id });
        let mut resp = json(self.status(), &body, request_id);
        if matches!(self, AdminError::Unauthenticated) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"credential-broker\""));
        }
        resp
    }
}

/// A JSON answer carrying the request id header.
pub(super) fn json(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
