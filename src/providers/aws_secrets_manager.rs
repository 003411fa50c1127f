//! The `aws_secrets_manager` provider: a long-lived secret (an API key, a database password) read
//! from AWS Secrets Manager with `GetSecretValue` and handed to an injector, never to the agent.
//!
//! - **Base credentials** come from the standard AWS chain (environment, shared files, IRSA web
//!   identity, ECS/EKS Pod Identity, IMDS), as for the `sts` provider. The broker's identity needs
//!   `secretsmanager:GetSecretValue` on the secret (and `kms:Decrypt` on a customer key), plus
//!   `secretsmanager:RotateSecret` if operators rotate through the broker.
//! - **Which value**: `version_id`, else `version_stage`, else `AWSCURRENT`; with `json_key` the
//!   secret string must be a JSON object and the credential is that key's value (how RDS and most
//!   console-made secrets are stored).
//! - **Scope**: a static secret grants whatever it grants; the credential scope names the secret,
//!   version and key so that different secrets never share a cache entry.
//! - **Lifetime**: the broker re-reads after `ttl` (capped by the policy TTL), which is how a
//!   rotation done outside the broker reaches it.
//! - **Rotate** calls `RotateSecret`; the caller then drops the provider's cached leases
//!   ([`super::rotation::rotate_and_drop`]). **Revoke** cannot do anything at AWS: a value that was
//!   read cannot be un-read; the broker drops its copy and rotation is the way to kill the value.
//! - **Retries** are the broker's (providers::retry); the SDK's own are off.

use std::path::Path;
use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use futures::future::BoxFuture;
use futures::FutureExt;
use zeroize::Zeroizing;

use super::aws_sdk::{classify_credentials_error, credentials_error, error_text, sdk_config, xml_element, RETRYABLE_CODES};
use super::redact::{scrub, truncate};
use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;
use crate::config::AwsSecretsManagerSettings;

pub struct AwsSecretsManagerProvider {
    name: String,
    settings: AwsSecretsManagerSettings,
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecretsManagerProvider {
    /// A provider whose base credentials come from the standard AWS credential chain, consulted
    /// on the first mint (so the broker starts while IMDS or Secrets Manager is unreachable).
    pub async fn new(name: &str, settings: &AwsSecretsManagerSettings, extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        Self::build(name, settings, extra_ca, None).await
    }

    /// A provider with explicitly given base credentials (tests, embedding) instead of the chain.
    pub async fn with_credentials(
        name: &str,
        settings: &AwsSecretsManagerSettings,
        extra_ca: Option<&Path>,
        credentials: impl ProvideCredentials + 'static,
    ) -> anyhow::Result<Self> {
        Self::build(name, settings, extra_ca, Some(SharedCredentialsProvider::new(credentials))).await
    }

    async fn build(
        name: &str,
        settings: &AwsSecretsManagerSettings,
        extra_ca: Option<&Path>,
        credentials: Option<SharedCredentialsProvider>,
    ) -> anyhow::Result<Self> {
        let sdk_config = sdk_config(&settings.region, extra_ca, credentials, "Secrets Manager").await?;
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&sdk_config);
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url.as_str().trim_end_matches('/'));
        }
        Ok(AwsSecretsManagerProvider { name: name.into(), settings: settings.clone(), client: aws_sdk_secretsmanager::Client::from_conf(config.build()) })
    }

    fn describe_version(&self) -> String {
        match (&self.settings.version_id, &self.settings.version_stage) {
            (Some(id), _) => format!("version {id}"),
            (None, Some(stage)) => format!("stage {stage}"),
            (None, None) => "stage AWSCURRENT".into(),
        }
    }
}

/// What a lease of this secret grants: `secretsmanager:<secret id>@<version>[#<json key>]`.
pub fn credential_scope(settings: &AwsSecretsManagerSettings) -> String {
    let version = settings.version_id.as_deref().or(settings.version_stage.as_deref()).unwrap_or("AWSCURRENT");
    let key = settings.json_key.as_deref().map(|k| format!("#{k}")).unwrap_or_default();
    format!("secretsmanager:{}@{version}{key}", settings.secret_id)
}

impl CredentialProvider for AwsSecretsManagerProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "aws_secrets_manager"
    }

    /// A static secret: the request's scope cannot narrow it, so the scope names the secret.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        credential_scope(&self.settings)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let id = &self.settings.secret_id;
            let mut out = self
                .client
                .get_secret_value()
                .secret_id(id)
                .set_version_id(self.settings.version_id.clone())
                .set_version_stage(self.settings.version_stage.clone())
                .send()
                .await
                .map_err(|e| sdk_error("GetSecretValue", id, &e))?;
            let text = match (out.secret_string.take(), out.secret_binary.take()) {
                (Some(s), _) => Zeroizing::new(s),
                (None, Some(b)) => Zeroizing::new(String::from_utf8(b.into_inner()).map_err(|_| {
                    ProviderError::permanent(format!("secret {id} ({}) is binary and not UTF-8; it cannot be a header value", self.describe_version()))
                })?),
                (None, None) => return Err(ProviderError::permanent(format!("secret {id} ({}) has no value", self.describe_version()))),
            };
            let value = match &self.settings.json_key {
                Some(key) => select_json_key(&text, key).map_err(|e| ProviderError::permanent(format!("secret {id} ({}): {e}", self.describe_version())))?,
                None => text,
            };
            if value.is_empty() {
                return Err(ProviderError::permanent(format!("secret {id} ({}) is empty", self.describe_version())));
            }
            let mut details = std::collections::BTreeMap::new();
            details.insert("secret_id".to_string(), id.clone());
            if let Some(arn) = out.arn.take() {
                details.insert("secret_arn".to_string(), arn);
            }
            if let Some(version) = out.version_id.take() {
                details.insert("version_id".to_string(), version);
            }
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(value.as_str())),
                expires_at: SystemTime::now() + self.settings.ttl.min(req.ttl),
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details,
            })
        }
        .boxed()
    }

    /// Secrets Manager has no per-read revocation: a value that was read stays valid until the
    /// secret is rotated. The broker drops its copy; this succeeds after doing nothing at AWS.
    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Ok(()) }.boxed()
    }

    /// `RotateSecret` on the configured secret (`secret_id` must name it, or be empty). Only this
    /// secret: the broker's identity may read others, but operators rotate through the broker
    /// only what the broker serves.
    fn rotate<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let id = &self.settings.secret_id;
            if !secret_id.is_empty() && secret_id != id {
                return Err(ProviderError::permanent(format!("provider {} serves secret {id}, not {secret_id}", self.name)));
            }
            self.client
                .rotate_secret()
                .secret_id(id)
                .set_rotation_lambda_arn(self.settings.rotation_lambda_arn.clone())
                .send()
                .await
                .map_err(|e| sdk_error("RotateSecret", id, &e))?;
            Ok(())
        }
        .boxed()
    }
}

/// Why a JSON key could not be selected. Never carries any part of the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonKeyError {
    #[error("json_key is set but the secret string is not a JSON object")]
    NotAnObject,
    #[error("the secret's JSON object has no key {0:?}")]
    Missing(String),
    #[error("the value of key {0:?} is not a string or number")]
    NotScalar(String),
}

/// The value of `key` in a JSON object secret: strings as they are, numbers in JSON form (ports,
/// numeric ids); anything else is refused.
pub fn select_json_key(secret: &str, key: &str) -> Result<Zeroizing<String>, JsonKeyError> {
    let mut object = match serde_json::from_str::<serde_json::Value>(secret) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(JsonKeyError::NotAnObject),
    };
    let value = match object.remove(key) {
        Some(serde_json::Value::String(s)) => Zeroizing::new(s),
        Some(serde_json::Value::Number(n)) => Zeroizing::new(n.to_string()),
        Some(_) => return Err(JsonKeyError::NotScalar(key.into())),
        None => return Err(JsonKeyError::Missing(key.into())),
    };
    // The other values of the object (a password next to the key asked for) are dropped here;
    // serde_json's strings are not zeroized, which is why the object is consumed, not cloned.
    Ok(value)
}

/// Not found, marked for deletion, access denied, decryption failure and every other client fault
/// fail for good; throttling, 5xx, timeouts and network errors are retried. The message has the
/// operation, secret id, HTTP status and AWS error code and message (scrubbed), never the value.
fn sdk_error<E>(operation: &str, secret_id: &str, e: &SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            // Emulators answer auth failures in the Query/XML form the JSON protocol parser does
            // not read, so fall back to the body (`<Code>` or `__type`).
            let body = ctx.raw().body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
            let code = ctx.err().code().map(str::to_string).or_else(|| error_code_from_body(&body)).unwrap_or_else(|| "(no error code)".into());
            let message = ctx.err().message().map(str::to_string).or_else(|| xml_element(&body, "Message"));
            let detail = message.map(|m| format!(": {}", scrub(&truncate(&m, 300)))).unwrap_or_default();
            let explain = match code.as_str() {
                "ResourceNotFoundException" => " (the secret, or the requested version, does not exist)",
                "InvalidRequestException" => " (for example, the secret is marked for deletion)",
                "AccessDeniedException" | "AccessDenied" => " (the broker's AWS identity is not allowed this call)",
                _ => "",
            };
            let message = format!("Secrets Manager {operation} on {secret_id} refused with HTTP {status} {code}{explain}{detail}");
            if status >= 500 || RETRYABLE_CODES.contains(&code.as_str()) {
                ProviderError::retryable(message)
            } else {
                ProviderError::permanent(message)
            }
        }
        SdkError::TimeoutError(_) => ProviderError::retryable(format!("Secrets Manager {operation} on {secret_id} timed out")),
        SdkError::ConstructionFailure(_) => match credentials_error(e) {
            Some(ce) => classify_credentials_error(ce, "Secrets Manager"),
            None => ProviderError::permanent(format!("Secrets Manager {operation} request could not be built: {}", error_text(e))),
        },
        SdkError::DispatchFailure(d) => match credentials_error(e) {
            Some(ce) => classify_credentials_error(ce, "Secrets Manager"),
            None if d.is_user() => ProviderError::permanent(format!("Secrets Manager {operation} could not be sent: {}", error_text(e))),
            None => ProviderError::retryable(format!("Secrets Manager unreachable: {}", error_text(e))),
        },
        SdkError::ResponseError(_) => ProviderError::retryable(format!("Secrets Manager {operation} answer unreadable: {}", error_text(e))),
        _ => ProviderError::retryable(format!("Secrets Manager {operation} failed: {}", error_text(e))),
    }
}

/// `<Code>` of an XML error body, else `__type` of a JSON one (without its `prefix#`).
fn error_code_from_body(body: &str) -> Option<String> {
    xml_element(body, "Code").or_else(|| {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let t = v.get("__type")?.as_str()?;
        Some(t.rsplit('#').next().unwrap_or(t).to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> AwsSecretsManagerSettings {
        AwsSecretsManagerSettings {
            secret_id: "prod/github-token".into(),
            version_stage: None,
            version_id: None,
            json_key: None,
            region: "us-east-1".into(),
            endpoint_url: None,
            ttl: Duration::from_secs(300),
            rotation_lambda_arn: None,
        }
    }

    #[test]
    fn the_credential_scope_names_secret_version_and_key() {
        assert_eq!(credential_scope(&settings()), "secretsmanager:prod/github-token@AWSCURRENT");
        let s = AwsSecretsManagerSettings { version_stage: Some("AWSPREVIOUS".into()), json_key: Some("password".into()), ..settings() };
        assert_eq!(credential_scope(&s), "secretsmanager:prod/github-token@AWSPREVIOUS#password");
        let s = AwsSecretsManagerSettings { version_id: Some("v-1".into()), ..settings() };
        assert_eq!(credential_scope(&s), "secretsmanager:prod/github-token@v-1");
    }

    #[test]
    fn json_keys_are_selected_without_leaking_the_other_values() {
        let secret = r#"{"username":"app","password":"s3cr3t-pw","port":5432,"nested":{"a":1}}"#;
        assert_eq!(select_json_key(secret, "password").unwrap().as_str(), "s3cr3t-pw");
        assert_eq!(select_json_key(secret, "port").unwrap().as_str(), "5432");
        let missing = select_json_key(secret, "token").unwrap_err();
        assert_eq!(missing, JsonKeyError::Missing("token".into()));
        assert!(!missing.to_string().contains("s3cr3t"));
        assert_eq!(select_json_key(secret, "nested").unwrap_err(), JsonKeyError::NotScalar("nested".into()));
        assert_eq!(select_json_key("plain-token-value", "password").unwrap_err(), JsonKeyError::NotAnObject);
        assert_eq!(select_json_key("[1,2]", "0").unwrap_err(), JsonKeyError::NotAnObject);
    }

    #[test]
    fn error_codes_from_xml_and_json_bodies() {
        let xml = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>no</Message></Error></Errors></ErrorResponse>";
        assert_eq!(error_code_from_body(xml).as_deref(), Some("AccessDenied"));
        let json = r#"{"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","message":"x"}"#;
        assert_eq!(error_code_from_body(json).as_deref(), Some("ResourceNotFoundException"));
        assert_eq!(error_code_from_body("garbage"), None);
    }

    #[test]
    fn scrub_blanks_tokens_but_keeps_arns_and_names() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/github-token-AbCdEf";
        assert_eq!(scrub(arn), arn);
        assert_eq!(scrub("key AKIAIOSFODNN7EXAMPLE here"), "key [redacted] here");
        assert_eq!(scrub("token ghp_0123456789abcdefghijABCDEFGHIJ012345 end"), "token [redacted] end");
    }
}
