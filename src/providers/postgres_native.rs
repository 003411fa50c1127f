//! `postgres_native`: where there is no Vault, the broker mints Postgres users itself. Through an
//! admin connection it creates a role that can log in for minutes (`CREATE ROLE … LOGIN PASSWORD …
//! VALID UNTIL …`) with the configured grants and role memberships, and on revoke ends the role's
//! sessions and drops it.
//!
//! The password goes to the server only as a SCRAM-SHA-256 verifier, so even a server that logs
//! every statement never records it. The admin connection uses TLS as `sslmode` says (default
//! `verify-full`), through rustls like every other upstream connection of the broker.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use tokio_postgres::config::{ChannelBinding, SslMode as PgSslMode};
use tokio_postgres::{Client, NoTls};

use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;
use crate::config::{PostgresTls, SslMode};
use crate::postgres::tls::MakeRustlsConnect;

/// Serialises this provider's grant changes in one database (transaction-scoped advisory lock).
const ACL_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('credential-broker:postgres_native:acl'))";

/// Roles this provider creates start with this.
pub const ROLE_PREFIX: &str = "cb_";
/// The exact shape of a minted role name (see [`role_name`]); the expiry sweep drops nothing else,
/// so an operator's own `cb_…` role with an expiry is never touched.
const MINTED_ROLE_PATTERN: &str = "^cb_[a-z0-9_]{1,40}_[0-9a-f]{16}$";

/// What a `postgres_native` provider needs: where the admin connection goes and what a minted
/// role may do.
#[derive(Debug, Clone)]
pub struct PostgresNativeSettings {
    pub host: String,
    pub port: u16,
    /// TLS for the admin connection (`sslmode`; the certificate must name `host`).
    pub tls: PostgresTls,
    /// The database the admin connection uses; grants and `DROP OWNED` act in it.
    pub database: String,
    pub admin_user: String,
    pub admin_password: Secret,
    /// Privileges granted to each minted role, as `GRANT <grant> TO <role>`: e.g.
    /// `SELECT ON ALL TABLES IN SCHEMA public`.
    pub grants: Vec<String>,
    /// Existing roles each minted role becomes a member of (`IN ROLE …`).
    pub member_of: Vec<String>,
    /// The longest a minted role lives.
    pub ttl: Duration,
    /// Bound on connecting to the server and on each admin round trip.
    pub timeout: Duration,
}

pub struct PostgresNativeProvider {
    name: String,
    settings: PostgresNativeSettings,
}

impl PostgresNativeProvider {
    pub fn new(name: &str, settings: PostgresNativeSettings) -> Result<Self, ProviderError> {
        for grant in &settings.grants {
            // One privilege clause each; a `;` or comment would smuggle in another statement.
            if grant.contains(';') || grant.contains("--") || grant.contains("/*") || grant.trim().is_empty() {
                return Err(ProviderError::permanent(format!("grant {grant:?} is not a single privilege clause")));
            }
        }
        Ok(PostgresNativeProvider { name: name.into(), settings })
    }

    /// From the validated config: reads the admin password file now, so a missing file stops start-up.
    pub fn from_config(name: &str, config: &crate::config::PostgresNativeConfig) -> Result<Self, ProviderError> {
        let password = std::fs::read_to_string(&config.admin_password_file)
            .map_err(|e| ProviderError::permanent(format!("admin_password_file {}: {e}", config.admin_password_file.display())))?;
        let settings = PostgresNativeSettings {
            host: config.host.clone(),
            port: config.port,
            tls: config.tls.clone(),
            database: config.database.clone(),
            admin_user: config.admin_user.clone(),
            admin_password: Secret::new(password.trim_end_matches(['\r', '\n'])),
            grants: config.grants.clone(),
            member_of: config.member_of.clone(),
            ttl: config.ttl,
            timeout: Duration::from_secs(10),
        };
        Self::new(name, settings)
    }

    async fn admin_connection(&self) -> Result<Client, ProviderError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.settings.host)
            .port(self.settings.port)
            .dbname(&self.settings.database)
            .user(&self.settings.admin_user)
            .password(self.settings.admin_password.expose())
            .application_name("credential-broker")
            .connect_timeout(self.settings.timeout);
        let timed_out = || ProviderError::retryable(format!("connecting to postgres at {}:{} timed out", self.settings.host, self.settings.port));
        let sslmode = self.settings.tls.sslmode;
        match (sslmode, &self.settings.tls.client) {
            (SslMode::Disable, _) => {
                config.ssl_mode(PgSslMode::Disable);
                let (client, connection) = tokio::time::timeout(self.settings.timeout, config.connect(NoTls))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| postgres_error("connecting to postgres", e))?;
                spawn_connection(connection);
                Ok(client)
            }
            // Fail closed: TLS was asked for but there are no settings for it; never cleartext.
            (SslMode::Require | SslMode::VerifyFull, None) => Err(ProviderError::permanent(format!(
                "connecting to postgres at {}:{}: sslmode {sslmode} but no TLS settings; refusing to continue in cleartext",
                self.settings.host, self.settings.port
            ))),
            (SslMode::Require | SslMode::VerifyFull, Some(tls)) => {
                // Require: TLS or nothing, never a fallback to cleartext; what is checked of the
                // server's certificate is up to the rustls settings (sslmode require or verify-full).
                config.ssl_mode(PgSslMode::Require);
                if sslmode == SslMode::Require {
                    // Any certificate was accepted, so the server is not authenticated: log in
                    // only with SCRAM-SHA-256-PLUS bound to the certificate seen (tokio-postgres
                    // then refuses cleartext, md5, SCRAM without binding and an AuthenticationOk
                    // that skips SCRAM), so a man in the middle gets no admin password.
                    config.channel_binding(ChannelBinding::Require);
                }
                let (client, connection) = tokio::time::timeout(self.settings.timeout, config.connect(MakeRustlsConnect(tls.clone())))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| tls_error(&self.settings, sslmode, e))?;
                spawn_connection(connection);
                Ok(client)
            }
        }
    }

    /// Runs `sql` (one or more statements, no parameters) within the configured timeout.
    async fn execute(&self, client: &Client, what: &str, sql: &str) -> Result<(), ProviderError> {
        tokio::time::timeout(self.settings.timeout, client.batch_execute(sql))
            .await
            .map_err(|_| ProviderError::retryable(format!("{what}: timed out")))?
            .map_err(|e| postgres_error(what, e))
    }

    async fn create_role(&self, req: &MintRequest) -> Result<Lease, ProviderError> {
        let role = role_name(&req.identity.agent_id);
        let password = random_password();
        let ttl = self.settings.ttl.min(req.ttl);
        let expires_at = SystemTime::now() + ttl;
        let valid_until = rfc3339(expires_at);
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        let mut sql = format!("CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}", quote_ident(&role), quote_literal(&verifier), quote_literal(&valid_until));
        if !self.settings.member_of.is_empty() {
            let groups: Vec<String> = self.settings.member_of.iter().map(|r| quote_ident(r)).collect();
            sql.push_str(&format!(" IN ROLE {}", groups.join(", ")));
        }
        sql.push(';');
        for grant in &self.settings.grants {
            sql.push_str(&format!("GRANT {grant} TO {};", quote_ident(&role)));
        }
        let client = self.admin_connection().await?;
        // One transaction: a failed grant leaves no half-made role behind. Concurrent GRANTs on
        // one table collide on its ACL ("tuple concurrently updated"): take turns, across brokers.
        self.execute(&client, "creating the role", &format!("BEGIN;{ACL_LOCK};{sql}COMMIT;")).await?;
        let mut details = BTreeMap::new();
        details.insert("role".to_string(), role.clone());
        details.insert("database".to_string(), self.settings.database.clone());
        details.insert("server".to_string(), format!("{}:{}", self.settings.host, self.settings.port));
        details.insert("valid_until".to_string(), valid_until);
        Ok(Lease {
            id: new_lease_id(),
            provider: self.name.clone(),
            credential: Credential::Password { username: role, password },
            expires_at,
            credential_scope: req.credential_scope.clone(),
            identity: req.identity.clone(),
            details,
        })
    }

    /// Stops `role` from logging in, ends its sessions, then drops it with what it owns or was
    /// granted in the admin database. Dropping a role that is already gone succeeds.
    pub async fn drop_role(&self, role: &str) -> Result<(), ProviderError> {
        let client = self.admin_connection().await?;
        let exists = tokio::time::timeout(self.settings.timeout, client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]))
            .await
            .map_err(|_| ProviderError::retryable("looking up the role: timed out"))?
            .map_err(|e| postgres_error("looking up the role", e))?;
        if exists.is_none() {
            return Ok(());
        }
        let ident = quote_ident(role);
        self.execute(&client, "disabling the role's login", &format!("ALTER ROLE {ident} NOLOGIN")).await?;
        tokio::time::timeout(self.settings.timeout, client.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", &[&role]))
            .await
            .map_err(|_| ProviderError::retryable("ending the role's sessions: timed out"))?
            .map_err(|e| postgres_error("ending the role's sessions", e))?;
        self.execute(&client, "dropping the role", &format!("BEGIN;{ACL_LOCK};DROP OWNED BY {ident};DROP ROLE {ident};COMMIT;")).await
    }

    /// Drops every role this broker minted whose `VALID UNTIL` has passed: a role that can no
    /// longer log in must not keep its open sessions either. Returns the roles dropped.
    pub async fn sweep_expired(&self) -> Result<Vec<String>, ProviderError> {
        let client = self.admin_connection().await?;
        let rows = tokio::time::timeout(
            self.settings.timeout,
            client.query("SELECT rolname FROM pg_roles WHERE rolname ~ $1 AND rolvaliduntil < now()", &[&MINTED_ROLE_PATTERN]),
        )
        .await
        .map_err(|_| ProviderError::retryable("listing expired roles: timed out"))?
        .map_err(|e| postgres_error("listing expired roles", e))?;
        drop(client);
        let mut dropped = Vec::new();
        for row in rows {
            let role: String = row.get(0);
            self.drop_role(&role).await?;
            dropped.push(role);
        }
        Ok(dropped)
    }
}

impl CredentialProvider for PostgresNativeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres_native"
    }

    /// Every role gets the same configured grants, so the statement cannot narrow the credential;
    /// the policy checks each statement instead.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        credential_scope(&self.name, &self.settings.host, &self.settings.database)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            // Expired roles go first; failing to sweep must not stop a mint.
            if let Err(e) = self.sweep_expired().await {
                tracing::warn!(provider = %self.name, error = %e, "dropping expired postgres roles failed");
            }
            self.create_role(req).await
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let role = lease.details.get("role").ok_or_else(|| ProviderError::permanent("the lease names no postgres role"))?;
            self.drop_role(role).await
        }
        .boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the postgres_native provider mints fresh roles; there is no long-lived secret to rotate")) }.boxed()
    }
}

/// What every role of one provider grants: the provider, server and database it was minted for.
pub fn credential_scope(provider: &str, host: &str, database: &str) -> String {
    format!("postgres_native:{provider}:{host}/{database}")
}

/// `cb_<agent>_<random>`: the agent id lowercased to `[a-z0-9_]`, cut so the whole name fits
/// Postgres' 63-byte identifier limit.
pub fn role_name(agent_id: &str) -> String {
    let agent: String = agent_id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(40).collect();
    let suffix: u64 = rand::rng().random();
    format!("{ROLE_PREFIX}{agent}_{suffix:016x}")
}

fn random_password() -> Secret {
    let bytes: [u8; 24] = rand::rng().random();
    Secret::new(hex::encode(bytes))
}

/// A double-quoted identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted string literal (standard_conforming_strings is on since Postgres 9.1).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres admin connection ended");
        }
    });
}

/// Connecting over TLS: a server without TLS or a certificate that fails the checks is a
/// permanent refusal with a clear reason (retrying will not change it); the rest as [`postgres_error`].
fn tls_error(settings: &PostgresNativeSettings, sslmode: SslMode, e: tokio_postgres::Error) -> ProviderError {
    let server = format!("{}:{}", settings.host, settings.port);
    // sslmode require: the server asked for cleartext, md5 or SCRAM without channel binding (or
    // skipped SCRAM). Refused by tokio-postgres (ChannelBinding::Require); retrying will not help.
    if e.to_string().starts_with("authentication error") && std::error::Error::source(&e).is_some_and(|c| c.to_string().contains("channel binding")) {
        return ProviderError::permanent(format!(
            "connecting to postgres at {server}: the server did not log the admin user in with channel binding, but sslmode require does not authenticate the server, so the broker only logs in with SCRAM-SHA-256-PLUS channel binding; use verify-full or have the server authenticate this user with scram-sha-256 over TLS"
        ));
    }
    // tokio-postgres says "error performing TLS handshake"; the reason is its source.
    let cause = match std::error::Error::source(&e) {
        Some(cause) if e.to_string().contains("TLS") => cause.to_string(),
        _ => return postgres_error("connecting to postgres", e),
    };
    if cause.contains("server does not support TLS") {
        return ProviderError::permanent(format!(
            "connecting to postgres at {server}: the server does not offer TLS but sslmode is {sslmode}; refusing to continue in cleartext"
        ));
    }
    let message = format!("connecting to postgres at {server}: TLS (sslmode {sslmode}) failed: {cause}");
    // rustls' refusals of the certificate ("invalid peer certificate: UnknownIssuer", "… not
    // valid for name …") stay refused; a connection dropped mid-handshake may be worth a retry.
    if cause.contains("certificate") {
        ProviderError::permanent(message)
    } else {
        ProviderError::retryable(message)
    }
}

/// Server-side refusals (bad grant, missing privilege) are permanent; connection trouble is retried.
fn postgres_error(what: &str, e: tokio_postgres::Error) -> ProviderError {
    match e.as_db_error() {
        // Transient: serialisation failures and deadlocks (40), resources (53), starting up or
        // shutting down (57P0x), concurrent catalog updates (XX000).
        Some(db) if ["40", "53", "57P0", "XX000"].iter().any(|c| db.code().code().starts_with(c)) => {
            ProviderError::retryable(format!("{what}: {} ({})", db.message(), db.code().code()))
        }
        Some(db) => ProviderError::permanent(format!("{what}: {} ({})", db.message(), db.code().code())),
        None => ProviderError::retryable(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_safe_identifiers_within_the_limit() {
        let name = role_name("Agent-7/billing.worker-with-a-very-long-name-that-goes-on-and-on");
        assert!(name.starts_with("cb_agent_7_billing_worker"), "{name}");
        assert!(name.len() <= 63, "{name}");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        assert_ne!(role_name("a"), role_name("a"));
        let pattern = regex_lite_match(&name);
        assert!(pattern, "{name} does not match the sweep pattern {MINTED_ROLE_PATTERN}");
    }

    /// MINTED_ROLE_PATTERN, checked by hand (the regex runs in Postgres).
    fn regex_lite_match(name: &str) -> bool {
        let Some(rest) = name.strip_prefix("cb_") else { return false };
        let Some((agent, suffix)) = rest.rsplit_once('_') else { return false };
        (1..=40).contains(&agent.len())
            && agent.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && suffix.len() == 16
            && suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn grants_that_could_carry_another_statement_are_refused() {
        let settings = PostgresNativeSettings {
            host: "127.0.0.1".into(),
            port: 5432,
            tls: PostgresTls::disabled(),
            database: "db".into(),
            admin_user: "admin".into(),
            admin_password: Secret::new("x"),
            grants: vec!["SELECT ON t; DROP TABLE t".into()],
            member_of: vec![],
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        };
        assert!(PostgresNativeProvider::new("pg", settings).is_err());
    }
}
