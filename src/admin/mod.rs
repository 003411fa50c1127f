//! The admin listener: health and readiness (the broker API grows here). Never on the agent port.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::broker::Broker;
use crate::pipeline::{new_request_id, BrokerError};
use crate::upstream::{full, Body};

pub async fn handle(broker: Arc<Broker>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/readyz") if broker.is_ready() => json_response(StatusCode::OK, json!({"status": "ready"})),
        (&Method::GET, "/readyz") => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "not ready"})),
        (_, path) => BrokerError::NotFound(path.to_string()).into_response(&new_request_id()),
    };
    Ok(resp)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
