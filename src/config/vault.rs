//! The validated `type: vault` provider configuration.

use std::path::PathBuf;
use std::time::Duration;

/// A Vault or OpenBao server, the broker's login to it, and the one engine it reads.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// The server's base URL (`https://…`, or `http://` on loopback).
    pub address: url::Url,
    /// Extra PEM roots for the server's certificate.
    pub ca_file: Option<PathBuf>,
    pub namespace: Option<String>,
    /// Bound on each request to the server.
    pub timeout: Duration,
    pub auth: VaultAuth,
    pub engine: VaultEngine,
}

/// How the broker obtains its own Vault token. Files are read at start-up and again at each
/// login (a projected service-account token rotates; so may a token written by an agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token read from a file (e.g. written by Vault Agent).
    Token { token_file: PathBuf },
    /// `auth/<mount>/login` with a role id and a secret id.
    AppRole { mount: String, role_id: String, secret_id_file: PathBuf },
    /// `auth/<mount>/login` with `{role, jwt}` against a jwt auth method.
    Jwt { mount: String, role: String, jwt_file: PathBuf },
    /// `auth/<mount>/login` with `{role, jwt}` against a kubernetes auth method (TokenReview).
    Kubernetes { mount: String, role: String, jwt_file: PathBuf },
}

impl VaultAuth {
    pub fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Jwt { .. } => "jwt",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// What the provider mints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultEngine {
    /// Dynamic database users from `<mount>/creds/<role>`, one Vault lease each.
    Database { mount: String, role: String },
    /// One field of a KV v2 secret (`<mount>/data/<path>`), kept for `ttl`.
    Kv { mount: String, path: String, field: String, ttl: Duration },
}
