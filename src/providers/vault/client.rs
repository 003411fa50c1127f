//! The HTTP side of the Vault provider: building the vaultrs client (rustls on ring, the
//! configured CA, namespace and timeout, nothing taken from `VAULT_*` variables), calls that
//! vaultrs cannot make (lease-carrying reads, `sys/leases/*`) through that client's own reqwest
//! client, and the mapping of every failure to a retryable or permanent [`ProviderError`] whose
//! text has passed through [`scrub`].

use serde::de::DeserializeOwned;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

use super::super::redact::{error_chain, scrub, truncate};
use super::super::ProviderError;
use crate::config::VaultSettings;

/// A failed call: the HTTP status when Vault answered (403 makes the caller log in again).
#[derive(Debug)]
pub(super) struct CallError {
    pub status: Option<u16>,
    pub error: ProviderError,
}

impl CallError {
    pub fn forbidden(&self) -> bool {
        self.status == Some(403)
    }
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        e.error
    }
}

/// A vaultrs client with no token yet. Every setting is explicit: vaultrs would otherwise read
/// `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT` and even `VAULT_SKIP_VERIFY` from the environment.
pub(super) fn build(settings: &VaultSettings) -> Result<VaultClient, ProviderError> {
    // reqwest is built without a crypto provider of its own (no aws-lc, no OpenSSL): ring, as the
    // rest of the broker. Installing fails only when a default is already set, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = VaultClientSettingsBuilder::default();
    builder
        .address(settings.address.as_str())
        .token("")
        .ca_certs(settings.ca_file.iter().map(|p| p.display().to_string()).collect())
        .identity(None)
        .verify(true)
        .timeout(Some(settings.timeout));
    builder.namespace(settings.namespace.clone());
    let client_settings = builder.build().map_err(|e| ProviderError::permanent(format!("vault client settings: {e}")))?;
    VaultClient::new(client_settings).map_err(|e| ProviderError::permanent(format!("building the vault client: {}", scrub(&error_chain(&e)))))
}

/// `method path` with the client's token (and namespace) on vaultrs' reqwest client; the JSON
/// answer as `T` (204: `T` from `null`). Used where vaultrs strips what the broker needs (a
/// lease's id and duration) or has no call (`sys/leases/renew`, `sys/leases/revoke`).
pub(super) async fn call<T: DeserializeOwned>(
    client: &VaultClient,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    what: &str,
) -> Result<T, CallError> {
    let url = format!("{}/v1/{}", client.http.base.trim_end_matches('/'), path.trim_start_matches('/'));
    let mut request = client.http.http.request(method, url).header("X-Vault-Request", "true");
    if !client.settings.token.is_empty() {
        request = request.header("X-Vault-Token", client.settings.token.as_str());
    }
    if let Some(ns) = &client.settings.namespace {
        request = request.header("X-Vault-Namespace", ns.as_str());
    }
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    let response = request.send().await.map_err(|e| transport(what, e))?;
    let status = response.status().as_u16();
    let bytes = Zeroizing::new(response.bytes().await.map_err(|e| transport(what, e))?.to_vec());
    if !(200..300).contains(&status) {
        return Err(status_error(what, status, &api_errors(&bytes)));
    }
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| CallError {
        status: Some(status),
        // serde_json's message names a position and a type, never the input.
        error: ProviderError::permanent(format!("{what}: unexpected answer from vault: {e}")),
    })
}

/// Vault's `{"errors": […]}`, scrubbed and cut short.
fn api_errors(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => truncate(&scrub(&e.errors.join("; ")), 300),
        Err(_) => String::new(),
    }
}

/// 5xx (sealed, standby, plugin down), 429 and 412 (a performance standby not caught up yet) are
/// worth retrying; other 4xx (unknown role, permission denied, bad secret id) are not.
pub(super) fn status_error(what: &str, status: u16, errors: &str) -> CallError {
    let retryable = status >= 500 || status == 429 || status == 412;
    let message = if errors.is_empty() { format!("{what}: vault answered {status}") } else { format!("{what}: vault answered {status}: {errors}") };
    CallError { status: Some(status), error: ProviderError { retryable, message } }
}

/// No answer (refused, reset, timed out, TLS failure): retryable, since the server may come back.
/// The URL is left out: `what` names the path, and the address is in the provider's config.
fn transport(what: &str, e: reqwest::Error) -> CallError {
    CallError { status: None, error: ProviderError::retryable(format!("{what}: {}", truncate(&scrub(&error_chain(&e.without_url())), 300))) }
}

/// The same mapping for errors from vaultrs' own calls.
pub(super) fn from_vaultrs(what: &str, e: vaultrs::error::ClientError) -> CallError {
    use rustify::errors::ClientError as Rest;
    use vaultrs::error::ClientError as V;
    match e {
        V::APIError { code, errors } => status_error(what, code, &truncate(&scrub(&errors.join("; ")), 300)),
        V::RestClientError { source: Rest::ServerResponseError { code, content } } => {
            status_error(what, code, &content.as_deref().map(|c| api_errors(c.as_bytes())).unwrap_or_default())
        }
        V::RestClientError { source: Rest::RequestError { source, .. } } => match source.downcast::<reqwest::Error>() {
            Ok(e) => transport(what, e),
            Err(source) => {
                CallError { status: None, error: ProviderError::retryable(format!("{what}: {}", truncate(&scrub(&error_chain(source.as_ref())), 300))) }
            }
        },
        other => CallError { status: None, error: ProviderError::permanent(format!("{what}: {}", truncate(&scrub(&error_chain(&other)), 300))) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        assert!(status_error("x", 503, "").error.retryable);
        assert!(status_error("x", 500, "").error.retryable);
        assert!(status_error("x", 429, "").error.retryable);
        assert!(!status_error("x", 400, "invalid role or secret ID").error.retryable);
        assert!(!status_error("x", 404, "").error.retryable);
        let denied = status_error("reading database/creds/ro", 403, "permission denied");
        assert!(denied.forbidden() && !denied.error.retryable);
        assert_eq!(denied.error.message, "reading database/creds/ro: vault answered 403: permission denied");
    }

    #[test]
    fn error_bodies_are_scrubbed() {
        let body = br#"{"errors":["token hvs.CAESIJ2yFmJj0123456789abcdefghijklmnopqrstuv is invalid"]}"#;
        let text = api_errors(body);
        assert!(!text.contains("CAESIJ2"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
