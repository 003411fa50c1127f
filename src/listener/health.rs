//! The health listener: `GET /healthz` and `GET /readyz` and nothing else, so kubelet probes can
//! reach the pod IP while the admin API stays on loopback.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::broker::Broker;
use crate::upstream::{full, Body};

/// Answer one probe. Every other path is 404, whatever the method.
pub async fn handle(broker: Arc<Broker>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let (status, body) = match req.uri().path() {
        "/healthz" | "/readyz" if !get => (StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"})),
        "/healthz" => (StatusCode::OK, json!({"status": "ok"})),
        "/readyz" if broker.is_ready() => (StatusCode::OK, json!({"status": "ready"})),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "not ready"})),
        _ => (StatusCode::NOT_FOUND, json!({"error": "not_found", "message": "the health listener serves only /healthz and /readyz"})),
    };
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}
