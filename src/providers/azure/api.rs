//! One call to an Azure endpoint over the broker's pooled client: Key Vault's error model
//! (`{"error": {"code", "message"}}`), the OAuth model of Entra ID and IMDS
//! (`{"error": "invalid_client", "error_description": "AADSTS…"}`), and `Retry-After`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::providers::redact::{error_chain, scrub, truncate};
use crate::providers::ProviderError;
use crate::upstream::{Body, HttpClient};

/// Answers larger than this are refused rather than buffered (a Key Vault secret is at most 25 KiB).
const MAX_ANSWER: usize = 128 * 1024;
/// A `Retry-After` this close is waited out before calling again; a later one fails the attempt
/// at once (retryable) so a throttled service is not called before it asked to be.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is not believed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Which Azure service answered: they differ in which statuses are worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    KeyVault,
    EntraId,
    /// Microsoft's IMDS guidance also retries 404 and 410 (the endpoint is updating).
    Imds,
}

/// The `Retry-After` each host asked for, honoured by every later call of the provider.
#[derive(Default)]
pub struct Throttle {
    not_before: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// Waits out a short `Retry-After` for `host`; refuses (retryable) while a long one runs.
    async fn wait(&self, host: &str, what: &str) -> Result<(), ProviderError> {
        let until = self.not_before.lock().unwrap_or_else(|e| e.into_inner()).get(host).copied();
        let Some(left) = until.and_then(|u| u.checked_duration_since(Instant::now())) else { return Ok(()) };
        if left > MAX_WAIT {
            return Err(ProviderError::retryable(format!("{what}: {host} asked for no calls for {} s more (Retry-After)", left.as_secs() + 1)));
        }
        tokio::time::sleep(left).await;
        Ok(())
    }

    fn note(&self, host: &str, retry_after: Duration) {
        let until = Instant::now() + retry_after.min(MAX_RETRY_AFTER);
        self.not_before.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), until);
    }
}

/// `Retry-After` as delta-seconds (what Key Vault, Entra ID and IMDS send) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(date - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO))
}

/// Sends `req` after any `Retry-After` its host asked for; a 2xx answer's body comes back,
/// anything else a [`ProviderError`] naming `what`, the status and the service's error code.
pub async fn call(
    client: &HttpClient,
    throttle: &Throttle,
    service: Service,
    req: Request<Body>,
    timeout: Duration,
    what: &str,
) -> Result<Bytes, ProviderError> {
    let host = req.uri().authority().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    throttle.wait(&host, what).await?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| ProviderError::retryable(format!("{what}: {host} timed out")))?
        .map_err(|e| ProviderError::retryable(format!("{what}: {host} unreachable: {}", scrub(&error_chain(&e)))))?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ProviderError::retryable(format!("{what}: reading the answer from {host}: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(body);
    }
    if let Some(wait) = wait.filter(|_| status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
        throttle.note(&host, wait);
    }
    Err(api_error(service, what, status, &body, wait))
}

#[derive(Deserialize)]
struct KeyVaultError {
    error: KeyVaultErrorDetail,
}

#[derive(Deserialize)]
struct KeyVaultErrorDetail {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<Box<KeyVaultErrorDetail>>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// 429, 408 and 5xx are retried (IMDS also 404 and 410); 400, 401, 403, 404 and the rest are
/// not. Only codes and a scrubbed, truncated message are kept: an error body is not trusted to
/// be free of secret material.
pub fn api_error(service: Service, what: &str, status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let detail = if let Ok(e) = serde_json::from_slice::<KeyVaultError>(body) {
        let inner = e.error.innererror.and_then(|i| i.code).map(|c| format!(" ({c})")).unwrap_or_default();
        let code = e.error.code.map(|c| format!(" {}", truncate(&c, 60))).unwrap_or_default();
        let message = e.error.message.map(|m| format!(": {}", scrub(&truncate(&m, 300)))).unwrap_or_default();
        format!("{code}{inner}{message}")
    } else if let Ok(e) = serde_json::from_slice::<OAuthError>(body) {
        // `AADSTS700213: No matching federated identity record… Trace ID: … Timestamp: …`: keep
        // the sentence, not the request ids.
        let description = e.error_description.map(|d| d.split(" Trace ID:").next().unwrap_or_default().trim().to_string());
        let description = description.filter(|d| !d.is_empty()).map(|d| format!(": {}", scrub(&truncate(&d, 300)))).unwrap_or_default();
        format!(" {}{description}", truncate(&e.error, 60))
    } else {
        String::new()
    };
    let after = retry_after.map(|d| format!(" (Retry-After {} s)", d.as_secs())).unwrap_or_default();
    let message = format!("{what} refused with HTTP {}{detail}{after}", status.as_u16());
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (service == Service::Imds && matches!(status.as_u16(), 404 | 410));
    if retryable {
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
    fn key_vault_error_bodies_are_classified_and_summarised() {
        let body = br#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) missing was not found in this key vault."}}"#;
        let e = api_error(Service::KeyVault, "Key Vault get", StatusCode::NOT_FOUND, body, None);
        assert!(!e.retryable);
        assert_eq!(e.message, "Key Vault get refused with HTTP 404 SecretNotFound: A secret with (name/id) missing was not found in this key vault.");
        let denied = br#"{"error":{"code":"Forbidden","message":"Caller is not authorized.","innererror":{"code":"ForbiddenByRbac"}}}"#;
        assert!(api_error(Service::KeyVault, "x", StatusCode::FORBIDDEN, denied, None).message.contains("403 Forbidden (ForbiddenByRbac): Caller"));
        let throttled = api_error(Service::KeyVault, "x", StatusCode::TOO_MANY_REQUESTS, br#"{"error":{"code":"Throttled"}}"#, Some(Duration::from_secs(3)));
        assert!(throttled.retryable && throttled.message.ends_with("429 Throttled (Retry-After 3 s)"), "{}", throttled.message);
        assert!(api_error(Service::KeyVault, "x", StatusCode::SERVICE_UNAVAILABLE, b"<html>", None).retryable);
        assert!(!api_error(Service::KeyVault, "x", StatusCode::NOT_FOUND, b"", None).retryable);
        assert!(api_error(Service::Imds, "x", StatusCode::NOT_FOUND, b"", None).retryable);
    }

    #[test]
    fn entra_errors_keep_the_aadsts_sentence_without_request_ids_or_tokens() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:agents:broker'. Trace ID: 0b1c Correlation ID: 2d3e Timestamp: 2024-01-01 00:00:00Z","error_codes":[700213]}"#;
        let e = api_error(Service::EntraId, "token", StatusCode::UNAUTHORIZED, body, None);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            "token refused with HTTP 401 invalid_client: AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:agents:broker'."
        );
        let leak = br#"{"error":"invalid_request","error_description":"bad assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"}"#;
        let e = api_error(Service::EntraId, "token", StatusCode::BAD_REQUEST, leak, None);
        assert!(!e.message.contains("eyJ"), "{}", e.message);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test]
    async fn a_long_retry_after_refuses_calls_until_it_has_passed() {
        let t = Throttle::default();
        t.note("vault", Duration::from_secs(60));
        let e = t.wait("vault", "Key Vault get").await.unwrap_err();
        assert!(e.retryable && e.message.contains("asked for no calls"), "{}", e.message);
        t.wait("other", "x").await.unwrap();
        t.note("vault", Duration::from_millis(20));
        let started = Instant::now();
        t.wait("vault", "x").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(15));
    }
}
