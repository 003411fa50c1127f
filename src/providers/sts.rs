//! The `sts` provider: AWS session credentials from STS `AssumeRole`, each bound by an inline
//! session policy to exactly the actions and resources one request needs.
//!
//! - **Base credentials** come from the standard AWS chain (aws-config): environment variables
//!   (development), the shared config/credentials files, IRSA web identity
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), ECS / EKS Pod Identity container credentials,
//!   then IMDS. The broker's own identity needs only `sts:AssumeRole` (plus `sts:TagSession` and
//!   `sts:SetSourceIdentity`) on the configured roles.
//! - **Role**: the tenant's role from `tenant_roles`, else `role_arn`.
//! - **Session policy** ([`session_policy`]): the scope's actions on the scope's resources, nothing
//!   more; the session's effective permissions are the intersection with the role's policies.
//! - **Lifetime**: STS issues at least 900 s. `DurationSeconds` is the lease TTL rounded up,
//!   clamped to 900..=3600 (3600 is every role's default `MaxSessionDuration`; the lease expires at
//!   `min(STS Expiration, now + ttl)` anyway). For a TTL under 900 s the policy also carries
//!   `DateLessThan aws:CurrentTime` = now + ttl, so AWS itself stops honouring the session then.
//! - **Attribution**: `RoleSessionName` = agent id + request id, `SourceIdentity` = agent id (both
//!   sanitised to STS's `[\w+=,.@-]`, 2..=64 characters), session tags `agent` and `tenant`, and
//!   `ExternalId` when configured. All of them show up in CloudTrail for the role's later calls.
//! - **Retries** are the broker's (providers::retry), so the SDK's own retries are off: one mint
//!   attempt is exactly one AssumeRole call.

mod session_policy;

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use futures::future::BoxFuture;
use futures::FutureExt;

pub use session_policy::{rfc3339_utc, session_policy};

use super::aws_sdk::{classify_credentials_error, credentials_error, error_text, sdk_config, xml_element, RETRYABLE_CODES};
use super::redact::{scrub, truncate};
use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;
use crate::config::StsSettings;

/// STS's minimum `DurationSeconds`.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The largest `DurationSeconds` asked for: the default `MaxSessionDuration` of an IAM role.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

pub struct StsProvider {
    name: String,
    settings: StsSettings,
    client: aws_sdk_sts::Client,
}

/// Everything one AssumeRole call sends, computed without I/O (and so testable on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleParams {
    pub role_arn: String,
    pub role_session_name: String,
    pub source_identity: String,
    /// The exact session policy, including the `aws:CurrentTime` condition when there is one.
    pub policy: String,
    pub duration_seconds: i32,
    /// Session tags, in the order sent: `agent`, `tenant`.
    pub tags: Vec<(String, String)>,
    pub external_id: Option<String>,
    /// When the lease must be out of use: `now + ttl` (whole seconds, rounded down).
    pub not_after: SystemTime,
}

impl StsProvider {
    /// A provider whose base credentials come from the standard AWS credential chain.
    /// Nothing is fetched here: the chain is consulted (and its answer cached and refreshed by the
    /// SDK) on the first mint, so the broker starts even while STS or IMDS is unreachable.
    pub async fn new(name: &str, settings: &StsSettings, extra_ca: Option<&Path>) -> anyhow::Result<StsProvider> {
        Self::build(name, settings, extra_ca, None).await
    }

    /// A provider with explicitly given base credentials (tests, embedding) instead of the chain.
    pub async fn with_credentials(
        name: &str,
        settings: &StsSettings,
        extra_ca: Option<&Path>,
        credentials: impl ProvideCredentials + 'static,
    ) -> anyhow::Result<StsProvider> {
        Self::build(name, settings, extra_ca, Some(SharedCredentialsProvider::new(credentials))).await
    }

    async fn build(name: &str, settings: &StsSettings, extra_ca: Option<&Path>, credentials: Option<SharedCredentialsProvider>) -> anyhow::Result<StsProvider> {
        let sdk_config = sdk_config(&settings.region, extra_ca, credentials, "STS").await?;
        let mut sts_config = aws_sdk_sts::config::Builder::from(&sdk_config);
        if let Some(url) = &settings.endpoint_url {
            sts_config = sts_config.endpoint_url(url.as_str().trim_end_matches('/'));
        }
        Ok(StsProvider { name: name.into(), settings: settings.clone(), client: aws_sdk_sts::Client::from_conf(sts_config.build()) })
    }

    /// The role a tenant's requests assume.
    pub fn role_for(&self, tenant: &str) -> &str {
        role_for(&self.settings, tenant)
    }
}

fn role_for<'a>(settings: &'a StsSettings, tenant: &str) -> &'a str {
    settings.tenant_roles.get(tenant).unwrap_or(&settings.role_arn)
}

/// The AssumeRole parameters for `req` at time `now`. Refuses (permanently) a request whose
/// `credential_scope` is not this provider's policy for its scope, and an empty scope: without a
/// `Policy`, STS would grant everything the role allows.
pub fn assume_role_params(settings: &StsSettings, req: &MintRequest, now: SystemTime) -> Result<AssumeRoleParams, ProviderError> {
    if req.scope.permissions.is_empty() {
        return Err(ProviderError::permanent("refusing to assume a role for an empty scope: the session would not be narrowed"));
    }
    if req.credential_scope != session_policy(&req.scope, None) {
        return Err(ProviderError::permanent("the credential scope is not the session policy of the request's scope"));
    }
    let ttl = req.ttl.max(Duration::from_secs(1));
    let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let duration = Duration::from_secs(ttl_secs).clamp(MIN_DURATION, MAX_DURATION);
    let not_after = truncate_to_seconds(now + ttl);
    let policy = session_policy(&req.scope, (ttl < MIN_DURATION).then_some(not_after));
    let agent = &req.identity.agent_id;
    Ok(AssumeRoleParams {
        role_arn: role_for(settings, &req.identity.tenant).to_string(),
        role_session_name: role_session_name(agent, &req.request_id),
        source_identity: sts_name(agent, 64),
        policy,
        duration_seconds: duration.as_secs() as i32,
        tags: vec![("agent".into(), tag_value(agent)), ("tenant".into(), tag_value(&req.identity.tenant))],
        external_id: settings.external_id.clone(),
        not_after,
    })
}

impl CredentialProvider for StsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sts"
    }

    /// The session policy (without the time condition, which depends on when it is minted).
    fn credential_scope(&self, scope: &Scope, _method: &str) -> String {
        session_policy(scope, None)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let p = assume_role_params(&self.settings, req, SystemTime::now())?;
            let mut call = self
                .client
                .assume_role()
                .role_arn(&p.role_arn)
                .role_session_name(&p.role_session_name)
                .source_identity(&p.source_identity)
                .policy(&p.policy)
                .duration_seconds(p.duration_seconds)
                .set_external_id(p.external_id.clone());
            for (key, value) in &p.tags {
                let tag = aws_sdk_sts::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| ProviderError::permanent(format!("building session tag {key}: {e}")))?;
                call = call.tags(tag);
            }
            let out = call.send().await.map_err(|e| assume_role_error(&p.role_arn, &e))?;
            let creds = out.credentials().ok_or_else(|| ProviderError::retryable(format!("STS AssumeRole on {} answered without credentials", p.role_arn)))?;
            if creds.access_key_id().is_empty() || creds.secret_access_key().is_empty() || creds.session_token().is_empty() {
                return Err(ProviderError::retryable(format!("STS AssumeRole on {} answered with empty credentials", p.role_arn)));
            }
            let sts_expiry = SystemTime::try_from(*creds.expiration()).unwrap_or(p.not_after);
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::AwsSession {
                    access_key_id: Secret::new(creds.access_key_id()),
                    secret_access_key: Secret::new(creds.secret_access_key()),
                    session_token: Secret::new(creds.session_token()),
                },
                expires_at: sts_expiry.min(p.not_after),
                details: [
                    ("role_arn", p.role_arn.clone()),
                    ("role_session_name", p.role_session_name.clone()),
                    ("source_identity", p.source_identity.clone()),
                    ("duration_seconds", p.duration_seconds.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                credential_scope: p.policy,
                identity: req.identity.clone(),
            })
        }
        .boxed()
    }

    /// STS has no call that revokes one session. AWS's way is to attach to the role a deny-all
    /// policy conditioned on `aws:TokenIssueTime` (which cuts off *every* session issued before a
    /// moment, not just one) — a break-glass action for an operator, not something to do per lease.
    /// The broker drops its copy of the credentials; the session's own lifetime (and, under 900 s,
    /// the policy's `aws:CurrentTime` condition) bounds it. So this succeeds after doing nothing.
    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Ok(()) }.boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async {
            Err(ProviderError::permanent(
                "the sts provider mints short-lived sessions; its base credentials come from the AWS credential chain and are rotated there",
            ))
        }
        .boxed()
    }
}

/// AccessDenied and every other client fault (bad signature, unknown key, malformed or too large
/// policy, role not assumable) fail for good; throttling, 5xx, timeouts and network errors are
/// retried. The message carries the STS error code and message (scrubbed), never key material.
fn assume_role_error(role_arn: &str, e: &SdkError<AssumeRoleError>) -> ProviderError {
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            // The SDK reads STS's `<ErrorResponse><Error>`; emulators (moto's auth errors) answer
            // in the `<ErrorResponse><Errors><Error>` form it does not, so fall back to the body.
            let body = ctx.raw().body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
            let code = ctx.err().code().map(str::to_string).or_else(|| xml_element(&body, "Code")).unwrap_or_else(|| "(no error code)".into());
            let code = code.as_str();
            let message = ctx.err().message().map(str::to_string).or_else(|| xml_element(&body, "Message"));
            let detail = message.map(|m| format!(": {}", scrub(&truncate(&m, 300)))).unwrap_or_default();
            let message = format!("STS AssumeRole on {role_arn} refused with HTTP {status} {code}{detail}");
            if status >= 500 || RETRYABLE_CODES.contains(&code) {
                ProviderError::retryable(message)
            } else {
                ProviderError::permanent(message)
            }
        }
        SdkError::TimeoutError(_) => ProviderError::retryable(format!("STS AssumeRole on {role_arn} timed out")),
        SdkError::ConstructionFailure(_) => match credentials_error(e) {
            Some(ce) => classify_credentials_error(ce, "STS"),
            None => ProviderError::permanent(format!("STS AssumeRole request could not be built: {}", error_text(e))),
        },
        SdkError::DispatchFailure(d) => match credentials_error(e) {
            Some(ce) => classify_credentials_error(ce, "STS"),
            None if d.is_user() => ProviderError::permanent(format!("STS AssumeRole could not be sent: {}", error_text(e))),
            None => ProviderError::retryable(format!("STS unreachable: {}", error_text(e))),
        },
        SdkError::ResponseError(_) => ProviderError::retryable(format!("STS AssumeRole answer unreadable: {}", error_text(e))),
        _ => ProviderError::retryable(format!("STS AssumeRole failed: {}", error_text(e))),
    }
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// STS names (`RoleSessionName`, `SourceIdentity`): `[\w+=,.@-]`, 2..=`max` characters. Anything
/// else becomes `-`; too short is padded with `-`.
fn sts_name(s: &str, max: usize) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-') { c } else { '-' }).take(max).collect();
    while out.len() < 2 {
        out.push('-');
    }
    out
}

/// `<agent>@<request id>`: the request id kept whole up to 40 characters (it is what ties the
/// CloudTrail record to the broker's audit record), the agent id truncated to fit 64.
fn role_session_name(agent: &str, request_id: &str) -> String {
    let rid = sts_name(request_id, 40);
    let agent = sts_name(agent, 64 - 1 - rid.len());
    format!("{agent}@{rid}")
}

/// Session tag values: `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`, at most 256 characters.
fn tag_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@') { c } else { '_' })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::providers::Identity;

    fn settings() -> StsSettings {
        StsSettings {
            role_arn: "arn:aws:iam::123456789012:role/agent-role".into(),
            tenant_roles: BTreeMap::from([("acme".to_string(), "arn:aws:iam::123456789012:role/acme-role".to_string())]),
            region: "us-east-1".into(),
            endpoint_url: None,
            external_id: Some("ext-1".into()),
        }
    }

    fn request(agent: &str, tenant: &str, ttl: Duration) -> MintRequest {
        let scope = Scope::single("s3", Some("us-east-1".into()), "s3:GetObject", "arn:aws:s3:::bucket-a/k.txt");
        MintRequest {
            identity: Identity { agent_id: agent.into(), tenant: tenant.into(), labels: BTreeMap::new() },
            credential_scope: session_policy(&scope, None),
            scope,
            ttl,
            request_id: "req-0193f2".into(),
        }
    }

    const NOW: u64 = 1_748_779_200; // 2025-06-01T12:00:00Z

    fn at(secs: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn a_short_ttl_asks_for_900_seconds_and_bounds_the_policy_in_time() {
        let p = assume_role_params(&settings(), &request("agent-7", "default", Duration::from_secs(300)), at(NOW, 400)).unwrap();
        assert_eq!(p.duration_seconds, 900);
        assert_eq!(p.not_after, at(NOW + 300, 0));
        assert_eq!(
            p.policy,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-a/k.txt","Condition":{"DateLessThan":{"aws:CurrentTime":"2025-06-01T12:05:00Z"}}}]}"#
        );
        assert_eq!(p.role_arn, "arn:aws:iam::123456789012:role/agent-role");
        assert_eq!(p.role_session_name, "agent-7@req-0193f2");
        assert_eq!(p.source_identity, "agent-7");
        assert_eq!(p.tags, vec![("agent".to_string(), "agent-7".to_string()), ("tenant".to_string(), "default".to_string())]);
        assert_eq!(p.external_id.as_deref(), Some("ext-1"));
    }

    #[test]
    fn a_ttl_of_900_or_more_needs_no_condition_and_is_rounded_up_then_clamped() {
        let long = assume_role_params(&settings(), &request("a", "t", Duration::from_millis(1_200_500)), at(NOW, 0)).unwrap();
        assert_eq!(long.duration_seconds, 1201);
        assert_eq!(long.policy, session_policy(&request("a", "t", Duration::ZERO).scope, None));
        let very_long = assume_role_params(&settings(), &request("a", "t", Duration::from_secs(8 * 3600)), at(NOW, 0)).unwrap();
        assert_eq!(very_long.duration_seconds, 3600);
        let exactly = assume_role_params(&settings(), &request("a", "t", MIN_DURATION), at(NOW, 0)).unwrap();
        assert_eq!(exactly.duration_seconds, 900);
        assert!(!exactly.policy.contains("Condition"));
    }

    #[test]
    fn tenants_with_their_own_role_assume_it() {
        let p = assume_role_params(&settings(), &request("a", "acme", Duration::from_secs(60)), at(NOW, 0)).unwrap();
        assert_eq!(p.role_arn, "arn:aws:iam::123456789012:role/acme-role");
    }

    #[test]
    fn names_are_sanitised_and_bounded() {
        let agent = format!("spiffe://cluster.local/ns/agents/sa/{}", "x".repeat(80));
        let mut req = request(&agent, "ten ant/ü", Duration::from_secs(60));
        req.request_id = "0193f2c4-7e1a-7b3c-9d2e-4f5a6b7c8d9e".into();
        let p = assume_role_params(&settings(), &req, at(NOW, 0)).unwrap();
        // The request id stays whole; the agent id gives way.
        assert_eq!(p.role_session_name, "spiffe---cluster.local-ns-a@0193f2c4-7e1a-7b3c-9d2e-4f5a6b7c8d9e");
        assert_eq!(p.role_session_name.len(), 64);
        assert_eq!(p.source_identity.len(), 64);
        assert!(p.source_identity.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
        assert_eq!(p.tags[1].1, "ten ant/ü");
        assert_eq!(sts_name("a", 64), "a-");
        assert_eq!(tag_value("a\"b{c}"), "a_b_c_");
    }

    #[test]
    fn refuses_empty_scopes_and_foreign_credential_scopes() {
        let mut req = request("a", "t", Duration::from_secs(60));
        req.credential_scope = "s3:*".into();
        assert!(!assume_role_params(&settings(), &req, at(NOW, 0)).unwrap_err().retryable);
        let mut req = request("a", "t", Duration::from_secs(60));
        req.scope.permissions.clear();
        req.credential_scope = session_policy(&req.scope, None);
        assert!(!assume_role_params(&settings(), &req, at(NOW, 0)).unwrap_err().retryable);
    }

    #[tokio::test]
    async fn the_extra_ca_bundle_is_checked_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        crate::tls::ca::CertificateAuthority::generate(&[], Duration::from_secs(3600)).unwrap().write_cert(&good).unwrap();
        let base = aws_credential_types::Credentials::new("AKIAEXAMPLE", "secret", None, None, "test");
        StsProvider::with_credentials("aws", &settings(), Some(&good), base.clone()).await.unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = StsProvider::with_credentials("aws", &settings(), Some(&empty), base.clone()).await.err().unwrap();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
        assert!(StsProvider::with_credentials("aws", &settings(), Some(&broken), base.clone()).await.is_err());
        assert!(StsProvider::with_credentials("aws", &settings(), Some(&dir.path().join("missing.pem")), base).await.is_err());
    }

    #[test]
    fn error_code_and_message_from_either_xml_form() {
        let ec2_style = r#"<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token is invalid.</Message></Error></Errors></ErrorResponse>"#;
        assert_eq!(xml_element(ec2_style, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(xml_element(ec2_style, "Message").as_deref(), Some("The security token is invalid."));
        assert_eq!(xml_element("<Error><Code></Code></Error>", "Code"), None);
        assert_eq!(xml_element("not xml", "Code"), None);
    }

    #[test]
    fn scrub_blanks_key_material_only() {
        let text = "key AKIAIOSFODNN7EXAMPLE secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY on arn:aws:iam::123456789012:role/agent-role";
        assert_eq!(scrub(text), "key [redacted] secret [redacted] on arn:aws:iam::123456789012:role/agent-role");
    }
}
