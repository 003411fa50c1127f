//! HTTP routing: `/mutate`, `/mutate/annotated`, `/healthz`, and JSON errors for the rest.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::admission::{review, NamespaceOptIn};
use crate::config::InjectorConfig;

/// Path the webhook entry for labelled namespaces calls.
pub const MUTATE_PATH: &str = "/mutate";
/// Path the webhook entry for other namespaces calls (only annotated pods are touched).
pub const MUTATE_ANNOTATED_PATH: &str = "/mutate/annotated";
/// Liveness/readiness path.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Largest AdmissionReview accepted; etcd caps objects at 1.5 MiB and a review carries one.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Answers one request; never fails, every problem becomes a JSON error response.
pub async fn handle(request: Request<Incoming>, config: &InjectorConfig) -> Response<Full<Bytes>> {
    let opt_in = match request.uri().path() {
        HEALTHZ_PATH => {
            return if request.method() == Method::GET { text(StatusCode::OK, "ok\n") } else { error(StatusCode::METHOD_NOT_ALLOWED, "use GET") };
        }
        MUTATE_PATH => NamespaceOptIn::Labelled,
        MUTATE_ANNOTATED_PATH => NamespaceOptIn::Unlabelled,
        other => return error(StatusCode::NOT_FOUND, &format!("no route for {other}")),
    };
    if request.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST with an AdmissionReview");
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return if err.is::<http_body_util::LengthLimitError>() {
                error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body is larger than {MAX_BODY_BYTES} bytes"))
            } else {
                error(StatusCode::BAD_REQUEST, &format!("cannot read request body: {err}"))
            };
        }
    };
    match review(&body, config, opt_in) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(err) => {
            tracing::warn!(error = %err, "bad admission request");
            error(StatusCode::BAD_REQUEST, &err.to_string())
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
