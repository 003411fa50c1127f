//! `sslmode` and `sslrootcert` of `databases[]` and of the `postgres_native` provider, every
//! problem with its key path.

use std::collections::BTreeMap;
use std::path::Path;

use super::{resolve_path, Problems};
use crate::config::{PostgresTls, ProviderConfig, SslMode};

/// The settings as written: `sslmode` (default `verify-full`) and `sslrootcert` (relative to the
/// config's directory). The rustls settings come from [`connect`].
pub(super) fn parse(p: &mut Problems, path: &str, base: &Path, sslmode: Option<String>, sslrootcert: Option<String>) -> PostgresTls {
    let mode = match sslmode.as_deref() {
        None => SslMode::VerifyFull,
        Some(v) => SslMode::parse(v).unwrap_or_else(|| {
            p.add(format!("{path}.sslmode"), format!("expected one of {} (got {v:?})", SslMode::NAMES));
            SslMode::VerifyFull
        }),
    };
    let sslrootcert = sslrootcert.map(|f| resolve_path(base, &f));
    if sslrootcert.is_some() && mode != SslMode::VerifyFull {
        p.add(
            format!("{path}.sslrootcert"),
            format!("only sslmode verify-full checks the server's certificate against a CA; with sslmode {mode} it would not be used"),
        );
    }
    PostgresTls { sslmode: mode, sslrootcert, client: None }
}

/// Builds the rustls settings: a missing or unparseable `sslrootcert` is a problem of
/// `{path}.sslrootcert`; without one, the roots of HTTPS upstreams (`upstream_ca`) are used.
pub(super) fn connect(p: &mut Problems, path: &str, tls: &mut PostgresTls, upstream_ca: Option<&Path>) {
    if tls.sslmode == SslMode::Disable {
        return;
    }
    // Reported already as tls.upstream_ca_file.
    if tls.sslrootcert.is_none() && upstream_ca.is_some_and(|f| !f.is_file()) {
        return;
    }
    match crate::postgres::tls::client_config(tls.sslmode, tls.sslrootcert.as_deref(), upstream_ca) {
        Ok(client) => tls.client = client,
        Err(e) if tls.sslrootcert.is_some() => p.add(format!("{path}.sslrootcert"), e.to_string()),
        Err(e) => p.add("tls.upstream_ca_file", e.to_string()),
    }
}

/// [`connect`] for every `postgres_native` provider's admin connection.
pub(super) fn connect_providers(p: &mut Problems, providers: &mut BTreeMap<String, ProviderConfig>, upstream_ca: Option<&Path>) {
    for (name, provider) in providers.iter_mut() {
        if let ProviderConfig::PostgresNative(settings) = provider {
            connect(p, &format!("providers.{name}"), &mut settings.tls, upstream_ca);
        }
    }
}
