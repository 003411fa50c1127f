//! Raw `type: vault` provider configuration (Vault or OpenBao).

use serde::Deserialize;

/// A Vault/OpenBao provider: where the server is, how the broker logs in, and exactly one engine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `https://vault.internal:8200` (`http://` only on loopback, for a dev server).
    pub address: String,
    /// A PEM bundle that signs the server's certificate, besides the system roots.
    pub ca_file: Option<String>,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// Bound on each request to the server (default 10).
    pub timeout_seconds: Option<u64>,
    pub auth: RawVaultAuth,
    /// Dynamic database users: `<mount>/creds/<role>`.
    pub database: Option<RawVaultDatabase>,
    /// A static secret's field in a KV v2 engine.
    pub kv: Option<RawVaultKv>,
}

/// Exactly one login method.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAuth {
    pub token: Option<RawVaultTokenAuth>,
    pub approle: Option<RawVaultAppRoleAuth>,
    pub jwt: Option<RawVaultJwtAuth>,
    pub kubernetes: Option<RawVaultJwtAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultTokenAuth {
    pub token_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAppRoleAuth {
    pub role_id: String,
    pub secret_id_file: String,
    pub mount: Option<String>,
}

/// `jwt` and `kubernetes`: a role and a (projected service-account) token file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultJwtAuth {
    pub role: String,
    pub jwt_file: String,
    pub mount: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultDatabase {
    pub mount: Option<String>,
    pub role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultKv {
    pub mount: Option<String>,
    pub path: String,
    pub field: String,
    /// How long the broker keeps a value before reading it again (default 300).
    pub ttl_seconds: Option<u64>,
}
