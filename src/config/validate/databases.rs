//! Validation of the Postgres listeners (`databases[]`), every problem with its key path.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use super::{postgres_tls, socket_addr, Problems};
use crate::config::raw::RawDatabase;
use crate::config::{DatabaseConfig, IdentityMode, ProviderConfig, SslMode, VaultEngine, VaultSettings};

pub(super) fn validate(
    p: &mut Problems,
    raw: Vec<RawDatabase>,
    providers: &BTreeMap<String, ProviderConfig>,
    identity: &IdentityMode,
    base: &Path,
    upstream_ca: Option<&Path>,
) -> Vec<DatabaseConfig> {
    // Every identity mode is served (crate::postgres::session): sidecar (the configured
    // identity), jwt (the agent's token as the password) and mtls (TLS with a client certificate).
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let path = format!("databases[{i}]");
        if d.name.is_empty() || !names.insert(d.name.clone()) {
            p.add(format!("{path}.name"), format!("{:?} is empty or not unique", d.name));
        }
        let listen = socket_addr(p, &format!("{path}.listen"), &d.listen);
        // Only processes of this pod may reach it: in sidecar mode agents log in without a
        // password, in jwt mode the token is sent as a cleartext password. In mtls mode every
        // connection is TLS with a verified client certificate, so it may face the network.
        if listen.is_some_and(|a| !a.ip().is_loopback()) && !matches!(identity, IdentityMode::Mtls(_)) {
            p.add(
                format!("{path}.listen"),
                "agents log in without a password (identity.mode sidecar) or with their token in cleartext (jwt), so the listener must be on loopback (only mtls may listen beyond it)",
            );
        }
        let upstream_host = match d.upstream.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Some(host.trim_start_matches('[').trim_end_matches(']').to_string()),
            _ => {
                p.add(format!("{path}.upstream"), format!("{:?} is not host:port", d.upstream));
                None
            }
        };
        if d.database.is_empty() {
            p.add(format!("{path}.database"), "is required");
        }
        match providers.get(&d.provider) {
            Some(ProviderConfig::PostgresNative(_)) => {}
            Some(ProviderConfig::Vault(VaultSettings { engine: VaultEngine::Database { .. }, .. })) => {}
            Some(ProviderConfig::Vault(_)) => p.add(
                format!("{path}.provider"),
                format!("vault provider {:?} reads a KV secret, not database logins: give it a `database: {{mount, role}}` engine", d.provider),
            ),
            Some(other) => p.add(
                format!("{path}.provider"),
                format!("a {} provider cannot mint database logins; use postgres_native or vault with a database engine", other.kind()),
            ),
            None => p.add(format!("{path}.provider"), format!("unknown provider {:?}", d.provider)),
        }
        let mut tls = postgres_tls::parse(p, &path, base, d.sslmode, d.sslrootcert);
        postgres_tls::connect(p, &path, &mut tls, upstream_ca);
        if let (Some(listen), Some(upstream_host)) = (listen, upstream_host) {
            if tls.sslmode != SslMode::Disable && crate::postgres::tls::server_name(&upstream_host).is_err() {
                p.add(format!("{path}.upstream"), format!("{upstream_host:?} is not a host name or IP address a certificate can be checked against"));
            }
            out.push(DatabaseConfig { name: d.name, listen, upstream: d.upstream, upstream_host, database: d.database, provider: d.provider, tls });
        }
    }
    out
}
