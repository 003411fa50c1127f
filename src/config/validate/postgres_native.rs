//! Validation of the `postgres_native` provider, every problem with its key path.

use std::path::Path;
use std::time::Duration;

use super::{postgres_tls, resolve_path, Problems};
use crate::config::raw::RawPostgresNative;
use crate::config::{PostgresNativeConfig, SslMode};

pub(super) fn validate(p: &mut Problems, path: &str, base: &Path, raw: RawPostgresNative) -> PostgresNativeConfig {
    // TLS settings; the rustls part is built once tls.upstream_ca_file is known
    // (postgres_tls::connect_providers).
    let tls = postgres_tls::parse(p, path, base, raw.sslmode, raw.sslrootcert);
    // In cleartext the admin password (a standing superuser-like secret) may only cross the
    // loopback interface.
    if tls.sslmode == SslMode::Disable && !crate::postgres::tls::is_loopback_host(&raw.host) {
        p.add(
            format!("{path}.host"),
            format!("{:?}: with sslmode disable the admin connection is cleartext, so only a loopback host (127.0.0.1, ::1, localhost) is allowed; use sslmode verify-full", raw.host),
        );
    }
    if tls.sslmode != SslMode::Disable && crate::postgres::tls::server_name(&raw.host).is_err() {
        p.add(format!("{path}.host"), format!("{:?} is not a host name or IP address a certificate can be checked against", raw.host));
    }
    for (key, value) in [("database", &raw.database), ("admin_user", &raw.admin_user)] {
        if value.is_empty() {
            p.add(format!("{path}.{key}"), "is required");
        }
    }
    for (i, grant) in raw.grants.iter().enumerate() {
        if grant.trim().is_empty() || grant.contains(';') || grant.contains("--") || grant.contains("/*") {
            p.add(format!("{path}.grants[{i}]"), format!("{grant:?} is not a single privilege clause like `SELECT ON ALL TABLES IN SCHEMA public`"));
        }
    }
    for (i, role) in raw.member_of.iter().enumerate() {
        if role.is_empty() {
            p.add(format!("{path}.member_of[{i}]"), "is empty");
        }
    }
    if raw.grants.is_empty() && raw.member_of.is_empty() {
        p.add(format!("{path}.grants"), "a minted role needs at least one grant or member_of role to be of use");
    }
    let ttl = Duration::from_secs(raw.ttl_seconds.unwrap_or(900));
    if !(30..=43_200).contains(&ttl.as_secs()) {
        p.add(format!("{path}.ttl_seconds"), "must be between 30 and 43200");
    }
    PostgresNativeConfig {
        host: raw.host,
        port: raw.port.unwrap_or(5432),
        tls,
        database: raw.database,
        admin_user: raw.admin_user,
        admin_password_file: resolve_path(base, &raw.admin_password_file),
        grants: raw.grants,
        member_of: raw.member_of,
        ttl,
    }
}
