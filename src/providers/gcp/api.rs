//! One Google API call over the broker's pooled client, and Google's error model
//! (`{"error": {"code", "message", "status"}}`) mapped to retryable or permanent.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::providers::redact::{error_chain, scrub, truncate};
use crate::providers::ProviderError;
use crate::upstream::{Body, HttpClient};

/// Answers larger than this are refused rather than buffered (a secret version is at most 64 KiB,
/// base64 makes it 88).
const MAX_ANSWER: usize = 128 * 1024;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    status: Option<String>,
}

/// Sends `req`; a 2xx answer's body comes back, anything else becomes a [`ProviderError`] naming
/// `what`, the HTTP status and Google's `error.status` and (scrubbed) `error.message`.
pub async fn call(client: &HttpClient, req: Request<Body>, timeout: Duration, what: &str) -> Result<Bytes, ProviderError> {
    let host = req.uri().host().unwrap_or("?").to_string();
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| ProviderError::retryable(format!("{what}: {host} timed out")))?
        .map_err(|e| ProviderError::retryable(format!("{what}: {host} unreachable: {}", scrub(&error_chain(&e)))))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ProviderError::retryable(format!("{what}: reading the answer from {host}: {e}")))?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(api_error(what, status, &body))
    }
}

/// 429 (`RESOURCE_EXHAUSTED`) and 5xx are retried; 400, 401, 403, 404 and the rest are not.
pub fn api_error(what: &str, status: StatusCode, body: &[u8]) -> ProviderError {
    let detail = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => {
            let code = b.error.status.map(|s| format!(" {s}")).unwrap_or_default();
            let message = b.error.message.map(|m| format!(": {}", scrub(&truncate(&m, 300)))).unwrap_or_default();
            format!("{code}{message}")
        }
        // OAuth endpoints answer `{"error": "invalid_grant", ...}`; keep only the code.
        Err(_) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(|e| format!(" {}", truncate(e, 60))))
            .unwrap_or_default(),
    };
    let message = format!("{what} refused with HTTP {}{detail}", status.as_u16());
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::retryable(message)
    } else {
        ProviderError::permanent(message)
    }
}

/// A 2xx answer that is not the JSON expected: where it is wrong, never what it held.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderError::retryable(format!("{what}: the answer is malformed JSON ({:?} error at line {} column {})", e.classify(), e.line(), e.column()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_bodies_are_classified_and_summarised() {
        let body = br#"{"error":{"code":404,"message":"Secret [projects/p/secrets/s] not found or has no versions.","status":"NOT_FOUND"}}"#;
        let e = api_error("Secret Manager access", StatusCode::NOT_FOUND, body);
        assert!(!e.retryable);
        assert_eq!(e.message, "Secret Manager access refused with HTTP 404 NOT_FOUND: Secret [projects/p/secrets/s] not found or has no versions.");
        let throttled = api_error("x", StatusCode::TOO_MANY_REQUESTS, br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#);
        assert!(throttled.retryable && throttled.message.ends_with("RESOURCE_EXHAUSTED"));
        assert!(api_error("x", StatusCode::SERVICE_UNAVAILABLE, b"<html>").retryable);
        assert_eq!(
            api_error("grant", StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant","error_description":"x"}"#).message,
            "grant refused with HTTP 400 invalid_grant"
        );
    }

    #[test]
    fn malformed_json_is_reported_without_its_content() {
        let e = parse_json::<serde_json::Value>(br#"{"accessToken": "ya29.secret-value"#, "generateAccessToken").unwrap_err();
        assert!(e.message.starts_with("generateAccessToken: the answer is malformed JSON (Eof error"), "{}", e.message);
        assert!(!e.message.contains("ya29"));
    }
}
