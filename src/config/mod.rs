//! Configuration: YAML → `${ENV}` expansion → raw serde structs → a validated [`Config`].
//!
//! Every problem names its key path (`routes[2].provider: unknown provider "x"`), and all of them
//! are reported at once, before anything binds a port.

mod env_expand;
mod identity;
mod raw;
mod validate;
mod vault;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use identity::{IdentityMode, JwksSource, JwtSettings, MtlsSettings};
pub use validate::HostPattern;
pub use vault::{VaultAuth, VaultEngine, VaultSettings};

/// A validated configuration. Everything here has been checked; defaults are filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub identity: IdentityConfig,
    pub listeners: Listeners,
    pub tls: TlsConfig,
    pub passthrough_hosts: Vec<PassthroughHost>,
    pub routes: Vec<Route>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub policy: PolicyConfig,
    pub credentials: CredentialsConfig,
    pub audit: AuditConfig,
    pub admin: AdminConfig,
    pub alerts: AlertsConfig,
    pub limits: Limits,
    pub logging: LoggingConfig,
    /// Postgres listeners, one per database.
    pub databases: Vec<DatabaseConfig>,
}

/// A host tunnelled opaquely (no interception, no credentials).
#[derive(Debug, Clone)]
pub struct PassthroughHost {
    pub pattern: HostPattern,
    /// The operator's per-host opt-in to loopback, link-local and cloud metadata destinations.
    pub allow_internal_addresses: bool,
}

/// A Postgres listener: agents connect to `listen` with no password; the broker logs in to
/// `upstream` with a user its `provider` mints for the session.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `host:port`
    pub upstream: String,
    /// The host part of `upstream`, as statement resources name it (`postgres://HOST/DB/…`).
    pub upstream_host: String,
    pub database: String,
    pub provider: String,
    /// TLS to `upstream` (`sslmode`, `sslrootcert`).
    pub tls: PostgresTls,
}

/// How the broker protects a connection to a Postgres server, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Cleartext TCP: only for a server on loopback or in the pod.
    Disable,
    /// TLS, but the server's certificate is not checked: protects against eavesdropping, not
    /// against an active man in the middle.
    Require,
    /// TLS with the certificate chain checked against the CA and the host name (or IP address)
    /// checked against the certificate. The default.
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, require, verify-full";

    pub fn parse(v: &str) -> Option<SslMode> {
        match v {
            "disable" => Some(SslMode::Disable),
            "require" => Some(SslMode::Require),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS settings for one Postgres server; built by [`crate::postgres::tls`].
#[derive(Debug, Clone)]
pub struct PostgresTls {
    pub sslmode: SslMode,
    /// The CA bundle that verifies the server (`verify-full` only); None: the roots the broker
    /// uses for HTTPS upstreams (web PKI plus `tls.upstream_ca_file`).
    pub sslrootcert: Option<PathBuf>,
    /// The rustls client settings; None for `disable`.
    pub client: Option<std::sync::Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Production,
    Dev,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub agent_id: String,
    pub tenant: String,
    pub labels: BTreeMap<String, String>,
    /// How agents identify: the sidecar identity above, or per connection.
    pub mode: IdentityMode,
}

#[derive(Debug, Clone)]
pub struct Listeners {
    pub proxy: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// The transparent listener (iptables REDIRECT target); None when off.
    pub transparent: Option<SocketAddr>,
    /// Probes only (`/healthz`, `/readyz`), no admin API; None when off.
    pub health: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca_cert_path: PathBuf,
    pub leaf_ttl: Duration,
    /// At most this many leaves are cached; the least recently used goes first.
    pub leaf_cache_max_entries: usize,
    pub upstream_ca_file: Option<PathBuf>,
}

/// Where a route's traffic goes and which credential it gets.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Dial this address instead of resolving the request's host (VPC endpoints, emulators, tests).
    /// TLS still verifies the request's host name.
    pub connect_to: Option<SocketAddr>,
    /// `connect_to: http://…`: the upstream speaks cleartext HTTP (an emulator on loopback). Only
    /// with `allow_plaintext_upstream`.
    pub connect_plaintext: bool,
    pub endpoint: Option<Endpoint>,
    pub provider: String,
    pub inject: Inject,
    pub allow_plaintext_upstream: bool,
}

/// How the minted credential reaches the upstream.
#[derive(Debug, Clone)]
pub enum Inject {
    Header(HeaderInject),
    SigV4(SigV4Inject),
}

#[derive(Debug, Clone)]
pub struct SigV4Inject {
    pub account_id: String,
    pub placeholder_access_key_id: String,
    pub custom_endpoints: Vec<crate::classify::aws::CustomEndpoint>,
    pub max_buffered_body_bytes: usize,
}

/// A local port that forwards to a fixed upstream base URL (no proxy settings or CA needed).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub listen: SocketAddr,
    pub upstream: url::Url,
}

#[derive(Debug, Clone)]
pub struct HeaderInject {
    pub name: http::HeaderName,
    /// Contains `{secret}` exactly once.
    pub format: String,
    pub placeholder: String,
}

// Built once at start-up and read by reference, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Env {
        variable: String,
        ttl: Duration,
    },
    OAuth2 {
        token_url: url::Url,
        client_id: String,
        client_secret_file: PathBuf,
        scopes: Vec<String>,
        scopes_by_method: BTreeMap<String, Vec<String>>,
        audience: Option<String>,
        revocation_url: Option<url::Url>,
    },
    Sts(StsSettings),
    AwsSecretsManager(AwsSecretsManagerSettings),
    GcpSecretManager(GcpSecretManagerSettings),
    GcpAccessToken(GcpAccessTokenSettings),
    AzureKeyVault(AzureKeyVaultSettings),
    AzureAccessToken(AzureAccessTokenSettings),
    PostgresNative(PostgresNativeConfig),
    Vault(VaultSettings),
}

/// A `postgres_native` provider: the admin connection (TLS per `sslmode`; cleartext only to a
/// loopback host) and what each minted role may do.
#[derive(Debug, Clone)]
pub struct PostgresNativeConfig {
    pub host: String,
    pub port: u16,
    /// TLS for the admin connection.
    pub tls: PostgresTls,
    pub database: String,
    pub admin_user: String,
    pub admin_password_file: PathBuf,
    /// `GRANT <grant> TO <role>` clauses, e.g. `SELECT ON ALL TABLES IN SCHEMA public`.
    pub grants: Vec<String>,
    pub member_of: Vec<String>,
    pub ttl: Duration,
}

/// One Secrets Manager secret (or one JSON key of it), read with the broker's own AWS identity.
#[derive(Debug, Clone)]
pub struct AwsSecretsManagerSettings {
    /// The secret's name or ARN.
    pub secret_id: String,
    /// `AWSCURRENT` when neither this nor `version_id` is set.
    pub version_stage: Option<String>,
    pub version_id: Option<String>,
    /// For a JSON object secret: the key whose value is the credential.
    pub json_key: Option<String>,
    pub region: String,
    /// Secrets Manager endpoint override (moto, VPC endpoint).
    pub endpoint_url: Option<url::Url>,
    /// How long the broker keeps a value before reading it again (capped by the policy TTL).
    pub ttl: Duration,
    /// Passed to `RotateSecret` when set; otherwise the secret's configured rotation is used.
    pub rotation_lambda_arn: Option<String>,
}

/// The broker's own Google identity.
#[derive(Debug, Clone)]
pub enum GcpIdentity {
    /// The metadata server (Workload Identity on GKE, the VM's service account on GCE).
    Metadata { base_url: url::Url },
    /// A service-account key file (development).
    KeyFile { path: PathBuf },
}

/// One Secret Manager secret version.
#[derive(Debug, Clone)]
pub struct GcpSecretManagerSettings {
    pub project: String,
    pub secret: String,
    /// `latest` or a version number.
    pub version: String,
    pub ttl: Duration,
    pub identity: GcpIdentity,
    /// Default `https://secretmanager.googleapis.com`.
    pub endpoint_url: url::Url,
    pub timeout: Duration,
}

/// Short-lived access tokens for one service account, scoped per request method.
#[derive(Debug, Clone)]
pub struct GcpAccessTokenSettings {
    pub service_account: String,
    pub scopes: Vec<String>,
    pub scopes_by_method: BTreeMap<String, Vec<String>>,
    pub identity: GcpIdentity,
    /// Default `https://iamcredentials.googleapis.com`.
    pub endpoint_url: url::Url,
    pub timeout: Duration,
}

/// The broker's own Azure (Entra ID) identity.
#[derive(Debug, Clone)]
pub enum AzureIdentity {
    /// Workload identity federation (AKS): the projected service-account token is the client assertion.
    WorkloadIdentity { authority_host: url::Url, tenant_id: String, client_id: String, token_file: PathBuf },
    /// A managed identity through IMDS: system-assigned, or the user-assigned one named by `client_id`.
    ManagedIdentity { endpoint: url::Url, client_id: Option<String> },
}

/// How `rotate` makes a Key Vault secret's next value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureSecretGenerator {
    /// 32 random bytes, base64url without padding (43 characters).
    RandomBase64Url32,
}

/// One Key Vault secret, latest or a pinned version.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultSettings {
    /// `https://{vault}.vault.azure.net` (or a sovereign cloud's suffix).
    pub vault_url: url::Url,
    pub secret: String,
    /// A 32-hex-digit version; None reads the latest.
    pub version: Option<String>,
    pub ttl: Duration,
    /// None: `rotate` through the broker is refused.
    pub rotation_generator: Option<AzureSecretGenerator>,
    pub identity: AzureIdentity,
    pub timeout: Duration,
}

/// Entra ID access tokens for one resource (`{resource}/.default`).
#[derive(Debug, Clone)]
pub struct AzureAccessTokenSettings {
    /// Always ends in `/.default`: the client-credentials flow can only ask for a resource's roles.
    pub scope: String,
    pub identity: AzureIdentity,
    pub timeout: Duration,
}

/// AssumeRole with an inline session policy per request scope.
#[derive(Debug, Clone)]
pub struct StsSettings {
    pub role_arn: String,
    /// Tenant → role: a tenant's requests assume its own role.
    pub tenant_roles: BTreeMap<String, String>,
    pub region: String,
    /// STS endpoint override (moto, VPC endpoint); default is the regional STS endpoint.
    pub endpoint_url: Option<url::Url>,
    pub external_id: Option<String>,
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Env { .. } => "env",
            ProviderConfig::OAuth2 { .. } => "oauth2",
            ProviderConfig::Sts(_) => "sts",
            ProviderConfig::AwsSecretsManager(_) => "aws_secrets_manager",
            ProviderConfig::GcpSecretManager(_) => "gcp_secret_manager",
            ProviderConfig::GcpAccessToken(_) => "gcp_access_token",
            ProviderConfig::AzureKeyVault(_) => "azure_key_vault",
            ProviderConfig::AzureAccessToken(_) => "azure_access_token",
            ProviderConfig::PostgresNative(_) => "postgres_native",
            ProviderConfig::Vault(_) => "vault",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub file: PathBuf,
    pub query: String,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    pub default_ttl: Duration,
    pub refresh_before_expiry: Duration,
    pub cache_max_entries: usize,
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the current file reaches this size (None: never).
    pub max_file_bytes: Option<u64>,
    /// Copy each record to stdout.
    pub stdout: bool,
}

/// The broker API and metrics on the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Bearer token file for `/v1/*`; None disables the broker API.
    pub token_file: Option<PathBuf>,
    pub metrics: bool,
}

/// Alert sinks beyond the log and the metrics.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Alertmanager base URL; alerts go to `{webhook_url}/api/v2/alerts`.
    pub webhook_url: Option<url::Url>,
    pub queue_capacity: usize,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    /// Also how long a passthrough tunnel may carry no bytes either way before it is closed.
    pub idle_timeout: Duration,
    /// Resolving and dialling a passthrough destination (CONNECT tunnels, transparent splices).
    pub connect_timeout: Duration,
    /// Connections each agent-facing listener holds at once (each its own budget).
    pub max_connections: usize,
    /// Of those, at most this many from one peer address.
    pub max_connections_per_peer: usize,
    pub drain_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub json: bool,
    pub level: String,
}

/// What the passthrough list grants one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassthroughAccess {
    pub allow_internal_addresses: bool,
}

/// One configuration problem, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {file}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<ConfigProblem>,
}

impl Config {
    /// Read, expand and validate a configuration file. Relative paths inside it are taken relative
    /// to the file's directory, so a config and its policy can travel together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![ConfigProblem { path: String::new(), message: format!("cannot read file: {e}") }],
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base, &|name| std::env::var(name).ok()).map_err(|problems| ConfigError { file: path.display().to_string(), problems })
    }

    /// Parse and validate YAML text; `lookup` resolves `${NAME}` references.
    pub fn from_yaml(text: &str, base_dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigProblem>> {
        let mut value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| vec![ConfigProblem { path: String::new(), message: format!("not valid YAML: {e}") }])?;
        if value.is_null() {
            value = serde_norway::Value::Mapping(Default::default());
        }
        let env_problems: Vec<ConfigProblem> =
            env_expand::expand_env(&mut value, lookup).into_iter().map(|(path, message)| ConfigProblem { path, message }).collect();
        if !env_problems.is_empty() {
            return Err(env_problems);
        }
        let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            vec![ConfigProblem { path: if path == "." { String::new() } else { path }, message: e.into_inner().to_string() }]
        })?;
        validate::validate(raw, base_dir)
    }

    /// The route whose host patterns match `host`, if any.
    pub fn route_for_host(&self, host: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.hosts.iter().any(|p| p.matches(host)))
    }

    /// Whether `host` may be tunnelled opaquely (no interception, no credentials).
    pub fn is_passthrough(&self, host: &str) -> bool {
        self.passthrough(host).is_some()
    }

    /// How `host` may be tunnelled: None if it is not a passthrough host, else whether internal
    /// addresses are allowed (any matching entry that opts in allows them).
    pub fn passthrough(&self, host: &str) -> Option<PassthroughAccess> {
        let mut matching = self.passthrough_hosts.iter().filter(|p| p.pattern.matches(host)).peekable();
        matching.peek()?;
        Some(PassthroughAccess { allow_internal_addresses: matching.any(|p| p.allow_internal_addresses) })
    }
}

#[cfg(test)]
mod tests;
