//! Raw configuration as written in YAML: serde structs that reject unknown keys.
//!
//! Nothing here is validated beyond its type; [`super::validate`] turns it into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

mod vault;
pub use vault::*;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `production` (default) or `dev`. Only `dev` allows the `env` provider.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub listeners: RawListeners,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub passthrough_hosts: Vec<RawPassthroughHost>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    pub policy: Option<RawPolicy>,
    #[serde(default)]
    pub credentials: RawCredentials,
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub databases: Vec<RawDatabase>,
}

/// One `passthrough_hosts[]` entry: a plain host pattern, or a map with per-host options.
#[derive(Debug)]
pub enum RawPassthroughHost {
    Pattern(String),
    Entry(RawPassthroughEntry),
}

/// `passthrough_hosts[]` written as a map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassthroughEntry {
    pub host: String,
    /// Allow loopback, link-local and cloud metadata addresses for this host (never the broker's
    /// own listeners).
    #[serde(default)]
    pub allow_internal_addresses: bool,
}

// By hand rather than `#[serde(untagged)]`: an untagged enum reports only "did not match any
// variant", whereas this keeps the map's own errors (`unknown field `allow_internal``…).
impl<'de> Deserialize<'de> for RawPassthroughHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawPassthroughHost;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host pattern or a map {host, allow_internal_addresses}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawPassthroughHost::Pattern(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawPassthroughEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawPassthroughHost::Entry)
            }
        }
        d.deserialize_any(V)
    }
}

/// A Postgres listener (`databases[]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub database: String,
    pub provider: String,
    /// `disable`, `require` or `verify-full` (default): TLS to `upstream`, as libpq's `sslmode`.
    pub sslmode: Option<String>,
    /// A PEM CA bundle for `verify-full`; default: the roots used for HTTPS upstreams.
    pub sslrootcert: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// `sidecar` (default), `jwt` or `mtls`.
    pub mode: Option<String>,
    pub agent_id: Option<String>,
    pub tenant: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub jwt: Option<super::identity::RawJwtIdentity>,
    pub mtls: Option<super::identity::RawMtlsIdentity>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListeners {
    pub proxy: Option<String>,
    pub admin: Option<String>,
    /// Connections redirected here by iptables (`credential-broker iptables-init`); off by default.
    pub transparent: Option<String>,
    /// `/healthz` and `/readyz` only, for kubelet probes on the pod IP; off by default.
    pub health: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_cert_path: Option<String>,
    pub leaf_ttl_seconds: Option<u64>,
    /// Leaf certificates kept (least recently used out first); default 1000.
    pub leaf_cache_max_entries: Option<usize>,
    pub upstream_ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub connect_to: Option<String>,
    pub endpoint: Option<RawEndpoint>,
    pub provider: String,
    pub inject: RawInject,
    #[serde(default)]
    pub allow_plaintext_upstream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub listen: String,
    pub upstream: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    pub header: Option<RawHeaderInject>,
    pub sigv4: Option<RawSigV4Inject>,
}

/// AWS routes: the request is classified into an IAM action + resource and re-signed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4Inject {
    /// The account that owns resources named without an ARN (DynamoDB tables, SQS queues…).
    pub account_id: String,
    /// The access key id the agent's SDK is configured with; any other key id is refused.
    pub placeholder_access_key_id: String,
    /// Hosts that are not `*.amazonaws.com` (emulators, VPC endpoints) and what they serve.
    #[serde(default)]
    pub custom_endpoints: Vec<RawCustomEndpoint>,
    /// Bodies that must be hashed to be signed are buffered up to this size (default 10 MiB).
    pub max_buffered_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomEndpoint {
    pub host: String,
    /// Omitted: the host serves every service, and each request's signed scope names its own.
    pub service: Option<String>,
    /// Omitted: each request's signed region is used.
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderInject {
    pub name: String,
    pub format: Option<String>,
    pub placeholder: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum RawProvider {
    Env {
        variable: String,
        ttl_seconds: Option<u64>,
    },
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret_file: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        scopes_by_method: BTreeMap<String, Vec<String>>,
        audience: Option<String>,
        revocation_url: Option<String>,
    },
    Sts {
        role_arn: String,
        #[serde(default)]
        tenant_roles: BTreeMap<String, String>,
        region: Option<String>,
        endpoint_url: Option<String>,
        external_id: Option<String>,
    },
    /// A secret read from AWS Secrets Manager (`GetSecretValue`), injected as a header.
    #[serde(rename = "aws_secrets_manager")]
    AwsSecretsManager {
        secret_id: String,
        version_stage: Option<String>,
        version_id: Option<String>,
        json_key: Option<String>,
        region: Option<String>,
        endpoint_url: Option<String>,
        ttl_seconds: Option<u64>,
        rotation_lambda_arn: Option<String>,
    },
    /// A Google Secret Manager secret version (`…/versions/{version}:access`).
    #[serde(rename = "gcp_secret_manager")]
    GcpSecretManager {
        project: String,
        secret: String,
        version: Option<String>,
        ttl_seconds: Option<u64>,
        credentials_file: Option<String>,
        metadata_url: Option<String>,
        endpoint_url: Option<String>,
    },
    /// A short-lived Google access token for a service account (IAM Credentials `generateAccessToken`).
    #[serde(rename = "gcp_access_token")]
    GcpAccessToken {
        service_account: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        scopes_by_method: BTreeMap<String, Vec<String>>,
        credentials_file: Option<String>,
        metadata_url: Option<String>,
        endpoint_url: Option<String>,
    },
    /// An Azure Key Vault secret (`GET {vault}/secrets/{name}/{version}`).
    #[serde(rename = "azure_key_vault")]
    AzureKeyVault {
        vault_url: String,
        secret: String,
        version: Option<String>,
        ttl_seconds: Option<u64>,
        rotation_generator: Option<String>,
        identity: Option<RawAzureIdentity>,
    },
    /// An Entra ID access token for one resource (`scope: {resource}/.default`, or `resource`).
    #[serde(rename = "azure_access_token")]
    AzureAccessToken {
        scope: Option<String>,
        resource: Option<String>,
        identity: Option<RawAzureIdentity>,
    },
    /// Short-lived Postgres roles the broker creates itself through an admin connection.
    #[serde(rename = "postgres_native")]
    PostgresNative(RawPostgresNative),
    /// Vault or OpenBao: dynamic database users or a KV v2 field.
    Vault(Box<RawVault>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresNative {
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    pub admin_user: String,
    pub admin_password_file: String,
    /// TLS for the admin connection, as on `databases[]`.
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default)]
    pub member_of: Vec<String>,
    pub ttl_seconds: Option<u64>,
}

/// Exactly one of the two: the broker's own Azure identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzureIdentity {
    pub workload_identity: Option<RawAzureWorkloadIdentity>,
    pub managed_identity: Option<RawAzureManagedIdentity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzureWorkloadIdentity {
    pub tenant_id: String,
    pub client_id: String,
    /// The projected service-account token (`$AZURE_FEDERATED_TOKEN_FILE` on AKS).
    pub token_file: String,
    pub authority_host: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAzureManagedIdentity {
    /// A user-assigned identity's client id; omit for the system-assigned identity.
    pub client_id: Option<String>,
    /// IMDS base URL override (tests); default `http://169.254.169.254`.
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub file: String,
    pub query: Option<String>,
    pub reload_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    pub default_ttl_seconds: Option<u64>,
    pub refresh_before_expiry_seconds: Option<u64>,
    pub cache_max_entries: Option<usize>,
    #[serde(default)]
    pub retry: RawRetry,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_retries: Option<u32>,
    pub base_delay_ms: Option<u64>,
    pub max_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: String,
    /// Start a new file once the current one reaches this size; the chain continues across files.
    pub max_file_bytes: Option<u64>,
    /// Also write each record to stdout, for a log shipper.
    #[serde(default)]
    pub stdout: bool,
}

/// The broker API on the admin listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// A file holding the bearer token for `/v1/*`; without it the broker API is disabled.
    pub token_file: Option<String>,
    /// Serve Prometheus metrics on `/metrics` (default true).
    pub metrics: Option<bool>,
}

/// Where the "Credential Minting Failure" alert goes besides the log and the metrics.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// An Alertmanager base URL (alerts are POSTed to `/api/v2/alerts`).
    pub webhook_url: Option<String>,
    pub queue_capacity: Option<usize>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    /// Connections one peer address may hold on one listener; default half of `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    pub drain_grace_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub format: Option<String>,
    pub level: Option<String>,
}
