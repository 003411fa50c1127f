//! What the AWS SDK-based providers (STS, Secrets Manager) share: which failures are worth
//! another attempt, how a base-credential failure is classified, and reading error bodies that
//! emulators answer in a form the SDK's parser does not.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

use super::redact::{error_chain, scrub, truncate};
use super::ProviderError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// AWS error codes worth another attempt besides any 5xx (throttling, transient faults, and base
/// credentials that expired between the SDK's refresh and the call).
pub(crate) const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "InternalServiceError",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// The base credentials could not be resolved: a missing or misconfigured chain is permanent, a
/// provider that timed out or failed (IMDS, the web-identity exchange) is worth retrying.
pub(crate) fn classify_credentials_error(ce: &CredentialsError, service: &str) -> ProviderError {
    let message = format!("no AWS base credentials for {service}: {}", scrub(&error_chain(ce)));
    match ce {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => ProviderError::permanent(message),
        _ => ProviderError::retryable(message),
    }
}

/// The credentials failure somewhere in an SDK error's source chain, if that is what it is.
pub(crate) fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ce) = err.downcast_ref::<CredentialsError>() {
            return Some(ce);
        }
        cur = err.source();
    }
    None
}

/// An SDK error as text fit for a log line: the whole cause chain, truncated and scrubbed.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    scrub(&truncate(&error_chain(e), 500))
}

/// The text of the first `<name>…</name>` in an XML error body (entities left as they are).
pub(crate) fn xml_element(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let len = body[start..].find(&format!("</{name}>"))?;
    Some(body[start..start + len].trim().to_string()).filter(|t| !t.is_empty())
}

/// The extra CA bundle, checked here: the SDK parses it only when it first connects, and panics
/// on a certificate it cannot parse.
pub(crate) fn read_ca_bundle(path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).with_context(|| format!("reading tls.upstream_ca_file {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow::anyhow!("parsing tls.upstream_ca_file {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| anyhow::anyhow!("tls.upstream_ca_file {}: unusable CA certificate: {e}", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "tls.upstream_ca_file {} holds no PEM certificate", path.display());
    Ok(pem)
}

/// The SDK configuration both AWS providers build their client from: rustls on ring (no proxy, so
/// the agent-facing proxy settings never carry broker traffic), the platform roots plus the extra
/// CA, the region, no SDK retries (the broker's own retry counts attempts) and short timeouts. The
/// base credentials come from the standard chain unless given.
pub(crate) async fn sdk_config(region: &str, extra_ca: Option<&Path>, credentials: Option<SharedCredentialsProvider>, what: &str) -> anyhow::Result<SdkConfig> {
    let mut trust = TrustStore::default();
    if let Some(path) = extra_ca {
        trust = trust.with_pem_certificate(read_ca_bundle(path)?);
    }
    let tls_context = TlsContext::builder().with_trust_store(trust).build().with_context(|| format!("building the {what} client's TLS context"))?;
    let http_client = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).tls_context(tls_context).build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new(region.to_string()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT).operation_timeout(OPERATION_TIMEOUT).build());
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    Ok(loader.load().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_error_elements() {
        let ec2_style =
            "<Response><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token is invalid.</Message></Error></Errors></Response>";
        assert_eq!(xml_element(ec2_style, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(xml_element(ec2_style, "Message").as_deref(), Some("The security token is invalid."));
        assert_eq!(xml_element("not xml", "Code"), None);
    }
}
