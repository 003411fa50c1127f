//! Raw config → validated [`Config`], collecting every problem with its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::*;
use super::*;

mod azure;
mod databases;
mod postgres_native;
mod postgres_tls;
mod vault;

/// A host name pattern: `api.example.com`, `*.example.com` (any subdomain, not the apex), or an
/// IP address (`127.0.0.1`, `::1`), which matches exactly that address in any spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pattern: String,
    ip: Option<IpAddr>,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(ip) = parse_ip(&lower) {
            return Ok(HostPattern { pattern: ip.to_string(), ip: Some(ip) });
        }
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = !name.is_empty()
            && name.split('.').all(|label| !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!("{s:?} is not a host name, *.domain pattern or IP address"));
        }
        // Clients (URL parsers, curl, browsers) read a name whose last label is a number as an
        // IP address, and a certificate can name an address only exactly: such a pattern could
        // never be served by a leaf, so it is refused here rather than failing per connection.
        if name.rsplit('.').next().is_some_and(is_numeric_label) {
            let why = if lower.starts_with("*.") {
                "a wildcard cannot match IP addresses (a certificate names an IP address only exactly); list each address"
            } else {
                "ends in a number, so clients read it as an IP address, but it is not one; write the address as a.b.c.d"
            };
            return Err(format!("{s:?}: {why}"));
        }
        Ok(HostPattern { pattern: lower, ip: None })
    }

    pub fn matches(&self, host: &str) -> bool {
        if let Some(ip) = self.ip {
            return parse_ip(host).is_some_and(|h| h == ip);
        }
        let host = host.trim_end_matches('.');
        match self.pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(&self.pattern),
        }
    }

    /// The DNS subtree this pattern lives in, for X.509 name constraints (the address itself,
    /// canonical, for an IP pattern).
    pub fn dns_subtree(&self) -> &str {
        self.pattern.strip_prefix("*.").unwrap_or(&self.pattern)
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// An IP literal, bracketed or not (`[::1]`, `::1`, `127.0.0.1`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(s).parse().ok()
}

/// A label that URL parsers take as a number: decimal digits, or `0x` and hex digits.
fn is_numeric_label(label: &str) -> bool {
    let hex = label.strip_prefix("0x").map(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    hex.unwrap_or_else(|| !label.is_empty() && label.chars().all(|c| c.is_ascii_digit()))
}

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem { path: path.into(), message: message.into() });
    }
}

fn ms(v: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(v.unwrap_or(default))
}

fn socket_addr(p: &mut Problems, path: &str, v: &str) -> Option<SocketAddr> {
    match v.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(path, format!("{v:?} is not an address like 127.0.0.1:15001"));
            None
        }
    }
}

fn resolve_path(base: &Path, v: &str) -> PathBuf {
    let p = PathBuf::from(v);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn https_url(p: &mut Problems, path: &str, v: &str, allow_http_loopback: bool) -> Option<url::Url> {
    match url::Url::parse(v) {
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u) if u.scheme() == "http" && allow_http_loopback && is_loopback(&u) => Some(u),
        Ok(_) => {
            p.add(path, format!("{v:?} must be an https URL (secrets never travel over cleartext)"));
            None
        }
        Err(e) => {
            p.add(path, format!("{v:?} is not a URL: {e}"));
            None
        }
    }
}

/// An endpoint's base path is prepended to every (canonical) request path, so it must be
/// canonical itself, as written: `url` resolves `..` and `%2e` silently, so the text is checked.
/// A query or fragment would be silently dropped; refused too.
fn canonical_base_url(p: &mut Problems, path: &str, raw: &str, url: &url::Url) -> bool {
    if url.query().is_some() || url.fragment().is_some() {
        p.add(path, format!("{raw:?}: a base URL takes no query or fragment"));
        return false;
    }
    let after_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let written = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    if written.is_empty() {
        return true;
    }
    match crate::classify::path::canonical_path(written) {
        Ok(canonical) if canonical == written => true,
        Ok(canonical) => {
            p.add(path, format!("base path {written:?} is not canonical; write it as {canonical:?}"));
            false
        }
        Err(e) => {
            p.add(path, format!("base path {written:?} refused: {e}"));
            false
        }
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<ConfigProblem>> {
    let mut p = Problems(Vec::new());

    let mode = match raw.mode.as_deref() {
        None | Some("production") => Mode::Production,
        Some("dev") => Mode::Dev,
        Some(other) => {
            p.add("mode", format!("{other:?} is not one of production, dev"));
            Mode::Production
        }
    };

    let identity = super::identity::validate(raw.identity, base, &mut p.0);

    let listeners = Listeners {
        proxy: socket_addr(&mut p, "listeners.proxy", raw.listeners.proxy.as_deref().unwrap_or("127.0.0.1:15001")),
        admin: socket_addr(&mut p, "listeners.admin", raw.listeners.admin.as_deref().unwrap_or("127.0.0.1:15000")),
        transparent: raw.listeners.transparent.as_deref().and_then(|v| socket_addr(&mut p, "listeners.transparent", v)),
        health: raw.listeners.health.as_deref().and_then(|v| socket_addr(&mut p, "listeners.health", v)),
    };

    let tls = TlsConfig {
        ca_cert_path: resolve_path(base, raw.tls.ca_cert_path.as_deref().unwrap_or("/var/run/credential-broker/ca.crt")),
        leaf_ttl: Duration::from_secs(raw.tls.leaf_ttl_seconds.unwrap_or(3600)),
        leaf_cache_max_entries: raw.tls.leaf_cache_max_entries.unwrap_or(crate::tls::ca::DEFAULT_LEAF_CACHE_ENTRIES),
        upstream_ca_file: raw.tls.upstream_ca_file.as_deref().map(|f| resolve_path(base, f)),
    };
    if !(300..=86_400).contains(&tls.leaf_ttl.as_secs()) {
        p.add("tls.leaf_ttl_seconds", "must be between 300 and 86400");
    }
    if !(1..=100_000).contains(&tls.leaf_cache_max_entries) {
        p.add("tls.leaf_cache_max_entries", "must be between 1 and 100000 (each cached leaf costs memory; an evicted host is minted a new leaf)");
    }
    if let Some(f) = &tls.upstream_ca_file {
        if !f.is_file() {
            p.add("tls.upstream_ca_file", format!("{} does not exist", f.display()));
        }
    }

    let passthrough_hosts = passthrough_hosts(&mut p, raw.passthrough_hosts);

    let mut providers = validate_providers(&mut p, raw.providers, mode, base);
    postgres_tls::connect_providers(&mut p, &mut providers, tls.upstream_ca_file.as_deref());
    let routes = validate_routes(&mut p, raw.routes, &providers);

    let policy = match raw.policy {
        Some(pol) => {
            let file = resolve_path(base, &pol.file);
            if !file.is_file() {
                p.add("policy.file", format!("{} does not exist", file.display()));
            }
            PolicyConfig {
                file,
                query: pol.query.unwrap_or_else(|| "data.credential_broker.decision".into()),
                reload_interval: ms(pol.reload_interval_ms, 1000),
            }
        }
        None => {
            p.add("policy", "is required (a Rego file; there is no implicit allow)");
            PolicyConfig { file: PathBuf::new(), query: String::new(), reload_interval: Duration::ZERO }
        }
    };

    let retry = RetryConfig {
        max_retries: raw.credentials.retry.max_retries.unwrap_or(3),
        base_delay: ms(raw.credentials.retry.base_delay_ms, 200),
        max_delay: ms(raw.credentials.retry.max_delay_ms, 5000),
    };
    if retry.max_retries > 3 {
        p.add("credentials.retry.max_retries", "must be at most 3 (the design caps retries before failing closed)");
    }
    let credentials = CredentialsConfig {
        default_ttl: Duration::from_secs(raw.credentials.default_ttl_seconds.unwrap_or(900)),
        refresh_before_expiry: Duration::from_secs(raw.credentials.refresh_before_expiry_seconds.unwrap_or(30)),
        cache_max_entries: raw.credentials.cache_max_entries.unwrap_or(10_000),
        retry,
    };
    if credentials.default_ttl.as_secs() < 60 || credentials.default_ttl.as_secs() > 43_200 {
        p.add("credentials.default_ttl_seconds", "must be between 60 and 43200");
    }

    let audit = match raw.audit {
        Some(a) => {
            if a.max_file_bytes.is_some_and(|n| n < 4096) {
                p.add("audit.max_file_bytes", "must be at least 4096");
            }
            AuditConfig { path: resolve_path(base, &a.path), max_file_bytes: a.max_file_bytes, stdout: a.stdout }
        }
        None => {
            p.add("audit", "is required: every issuance must be recorded");
            AuditConfig { path: PathBuf::new(), max_file_bytes: None, stdout: false }
        }
    };
    let admin = validate_admin(&mut p, raw.admin, base);
    let alerts = validate_alerts(&mut p, raw.alerts);

    let l = raw.limits;
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.unwrap_or(64 * 1024),
        header_read_timeout: ms(l.header_read_timeout_ms, 10_000),
        request_timeout: ms(l.request_timeout_ms, 60_000),
        idle_timeout: ms(l.idle_timeout_ms, 300_000),
        connect_timeout: ms(l.connect_timeout_ms, 10_000),
        max_connections: l.max_connections.unwrap_or(1024),
        // Half by default: with peers on several addresses, one can never take a whole listener.
        max_connections_per_peer: l.max_connections_per_peer.unwrap_or((l.max_connections.unwrap_or(1024) / 2).max(1)),
        drain_grace: ms(l.drain_grace_ms, 10_000),
    };
    if limits.max_header_bytes < 8192 {
        p.add("limits.max_header_bytes", "must be at least 8192");
    }
    for (key, value) in [("idle_timeout_ms", limits.idle_timeout), ("connect_timeout_ms", limits.connect_timeout)] {
        if value.is_zero() {
            p.add(format!("limits.{key}"), "must be at least 1");
        }
    }
    if limits.max_connections == 0 {
        p.add("limits.max_connections", "must be at least 1");
    }
    if limits.max_connections_per_peer == 0 || limits.max_connections_per_peer > limits.max_connections {
        p.add("limits.max_connections_per_peer", format!("must be between 1 and limits.max_connections ({})", limits.max_connections));
    }

    let logging = LoggingConfig {
        json: match raw.logging.format.as_deref() {
            None | Some("json") => true,
            Some("text") => false,
            Some(other) => {
                p.add("logging.format", format!("{other:?} is not one of json, text"));
                true
            }
        },
        level: raw.logging.level.unwrap_or_else(|| "info".into()),
    };

    let databases = databases::validate(&mut p, raw.databases, &providers, &identity.mode, base, tls.upstream_ca_file.as_deref());

    if p.0.is_empty() {
        Ok(Config {
            mode,
            identity,
            listeners,
            tls,
            passthrough_hosts,
            routes,
            providers,
            policy,
            credentials,
            audit,
            admin,
            alerts,
            limits,
            logging,
            databases,
        })
    } else {
        Err(p.0)
    }
}

fn validate_admin(p: &mut Problems, raw: RawAdmin, base: &Path) -> AdminConfig {
    let token_file = raw.token_file.map(|f| resolve_path(base, &f));
    if let Some(f) = &token_file {
        match std::fs::read_to_string(f) {
            Ok(t) if t.trim().len() >= 16 => {}
            Ok(_) => p.add("admin.token_file", format!("{} holds fewer than 16 characters; use a long random token", f.display())),
            Err(e) => p.add("admin.token_file", format!("{} cannot be read: {e}", f.display())),
        }
    }
    AdminConfig { token_file, metrics: raw.metrics.unwrap_or(true) }
}

fn validate_alerts(p: &mut Problems, raw: RawAlerts) -> AlertsConfig {
    // Cleartext only to loopback (a local receiver in tests or a node-local relay).
    let webhook_url = raw.webhook_url.and_then(|u| https_url(p, "alerts.webhook_url", &u, true));
    let alerts = AlertsConfig { webhook_url, queue_capacity: raw.queue_capacity.unwrap_or(256), max_attempts: raw.max_attempts.unwrap_or(5) };
    if alerts.queue_capacity == 0 {
        p.add("alerts.queue_capacity", "must be at least 1");
    }
    if !(1..=20).contains(&alerts.max_attempts) {
        p.add("alerts.max_attempts", "must be between 1 and 20");
    }
    alerts
}

fn host_patterns(p: &mut Problems, path: &str, hosts: &[String]) -> Vec<HostPattern> {
    hosts.iter().enumerate().filter_map(|(i, h)| HostPattern::parse(h).map_err(|e| p.add(format!("{path}[{i}]"), e)).ok()).collect()
}

fn passthrough_hosts(p: &mut Problems, raw: Vec<RawPassthroughHost>) -> Vec<PassthroughHost> {
    let parse = |p: &mut Problems, path: String, host: &str| HostPattern::parse(host).map_err(|e| p.add(path, e)).ok();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, entry)| match entry {
            RawPassthroughHost::Pattern(h) => {
                parse(p, format!("passthrough_hosts[{i}]"), &h).map(|pattern| PassthroughHost { pattern, allow_internal_addresses: false })
            }
            RawPassthroughHost::Entry(e) => parse(p, format!("passthrough_hosts[{i}].host"), &e.host)
                .map(|pattern| PassthroughHost { pattern, allow_internal_addresses: e.allow_internal_addresses }),
        })
        .collect()
}

fn validate_providers(p: &mut Problems, raw: BTreeMap<String, RawProvider>, mode: Mode, base: &Path) -> BTreeMap<String, ProviderConfig> {
    let mut out = BTreeMap::new();
    for (name, provider) in raw {
        let path = format!("providers.{name}");
        let validated = match provider {
            RawProvider::Env { variable, ttl_seconds } => {
                if mode != Mode::Dev {
                    p.add(format!("{path}.type"), "the env provider is for dev/test only: set `mode: dev` to use it");
                }
                ProviderConfig::Env { variable, ttl: Duration::from_secs(ttl_seconds.unwrap_or(300)) }
            }
            RawProvider::Oauth2 { token_url, client_id, client_secret_file, scopes, scopes_by_method, audience, revocation_url } => {
                let token_url = https_url(p, &format!("{path}.token_url"), &token_url, false);
                let revocation_url = revocation_url.and_then(|u| https_url(p, &format!("{path}.revocation_url"), &u, false));
                let scopes_by_method = scopes_by_method.into_iter().map(|(m, s)| (m.to_ascii_uppercase(), s)).collect();
                if client_id.is_empty() {
                    p.add(format!("{path}.client_id"), "is required");
                }
                match (token_url, revocation_url) {
                    (Some(token_url), revocation_url) => ProviderConfig::OAuth2 {
                        token_url,
                        client_id,
                        client_secret_file: resolve_path(base, &client_secret_file),
                        scopes,
                        scopes_by_method,
                        audience,
                        revocation_url,
                    },
                    _ => continue,
                }
            }
            RawProvider::Sts { role_arn, tenant_roles, region, endpoint_url, external_id } => {
                role(p, &format!("{path}.role_arn"), &role_arn);
                for (tenant, arn) in &tenant_roles {
                    role(p, &format!("{path}.tenant_roles.{tenant}"), arn);
                }
                let region = region.unwrap_or_default();
                if region.is_empty() {
                    p.add(format!("{path}.region"), "is required (the STS region, e.g. us-east-1)");
                }
                // Cleartext is allowed only to loopback: an emulator such as moto in tests.
                let endpoint_url = endpoint_url.and_then(|u| https_url(p, &format!("{path}.endpoint_url"), &u, true));
                ProviderConfig::Sts(super::StsSettings { role_arn, tenant_roles, region, endpoint_url, external_id })
            }
            RawProvider::AwsSecretsManager { secret_id, version_stage, version_id, json_key, region, endpoint_url, ttl_seconds, rotation_lambda_arn } => {
                ProviderConfig::AwsSecretsManager(validate_aws_secrets_manager(
                    p,
                    &path,
                    super::AwsSecretsManagerSettings {
                        secret_id,
                        version_stage,
                        version_id,
                        json_key,
                        region: region.unwrap_or_default(),
                        endpoint_url: None,
                        ttl: Duration::from_secs(ttl_seconds.unwrap_or(300)),
                        rotation_lambda_arn,
                    },
                    endpoint_url,
                ))
            }
            RawProvider::GcpSecretManager { project, secret, version, ttl_seconds, credentials_file, metadata_url, endpoint_url } => {
                let version = version.unwrap_or_else(|| "latest".into());
                for (key, value) in [("project", &project), ("secret", &secret)] {
                    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                        p.add(format!("{path}.{key}"), format!("{value:?} is not a Google {key} id"));
                    }
                }
                if version != "latest" && (version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit())) {
                    p.add(format!("{path}.version"), format!("{version:?} is not `latest` or a version number"));
                }
                let ttl = Duration::from_secs(ttl_seconds.unwrap_or(300));
                if !(1..=43_200).contains(&ttl.as_secs()) {
                    p.add(format!("{path}.ttl_seconds"), "must be between 1 and 43200");
                }
                let identity = gcp_identity(p, &path, credentials_file, metadata_url, base);
                let endpoint_url = gcp_endpoint(p, &path, endpoint_url, "https://secretmanager.googleapis.com");
                let timeout = Duration::from_secs(10);
                ProviderConfig::GcpSecretManager(GcpSecretManagerSettings { project, secret, version, ttl, identity, endpoint_url, timeout })
            }
            RawProvider::GcpAccessToken { service_account, scopes, scopes_by_method, credentials_file, metadata_url, endpoint_url } => {
                let unique_id = service_account.len() >= 10 && service_account.bytes().all(|b| b.is_ascii_digit());
                if !service_account.contains('@') && !unique_id {
                    p.add(format!("{path}.service_account"), format!("{service_account:?} is not a service account email or unique id"));
                }
                let scopes_by_method: BTreeMap<String, Vec<String>> = scopes_by_method.into_iter().map(|(m, s)| (m.to_ascii_uppercase(), s)).collect();
                if scopes.is_empty() && scopes_by_method.values().all(Vec::is_empty) {
                    p.add(format!("{path}.scopes"), "at least one OAuth scope is required (e.g. https://www.googleapis.com/auth/devstorage.read_only)");
                }
                let identity = gcp_identity(p, &path, credentials_file, metadata_url, base);
                let endpoint_url = gcp_endpoint(p, &path, endpoint_url, "https://iamcredentials.googleapis.com");
                let timeout = Duration::from_secs(10);
                ProviderConfig::GcpAccessToken(GcpAccessTokenSettings { service_account, scopes, scopes_by_method, identity, endpoint_url, timeout })
            }
            RawProvider::AzureKeyVault { vault_url, secret, version, ttl_seconds, rotation_generator, identity } => {
                match azure::key_vault(p, &path, base, vault_url, secret, version, ttl_seconds, rotation_generator, identity) {
                    Some(settings) => ProviderConfig::AzureKeyVault(settings),
                    None => continue,
                }
            }
            RawProvider::AzureAccessToken { scope, resource, identity } => match azure::access_token(p, &path, base, scope, resource, identity) {
                Some(settings) => ProviderConfig::AzureAccessToken(settings),
                None => continue,
            },
            RawProvider::PostgresNative(raw) => ProviderConfig::PostgresNative(postgres_native::validate(p, &path, base, raw)),
            RawProvider::Vault(raw) => match vault::validate(p, &path, base, *raw) {
                Some(settings) => ProviderConfig::Vault(settings),
                None => continue,
            },
        };
        out.insert(name, validated);
    }
    out
}

fn validate_routes(p: &mut Problems, raw: Vec<RawRoute>, providers: &BTreeMap<String, ProviderConfig>) -> Vec<Route> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.is_empty() || !names.insert(r.name.clone()) {
            p.add(format!("{path}.name"), format!("{:?} is empty or used by another route", r.name));
        }
        if r.hosts.is_empty() && r.endpoint.is_none() {
            p.add(format!("{path}.hosts"), "a route needs hosts, an endpoint, or both");
        }
        let hosts = host_patterns(p, &format!("{path}.hosts"), &r.hosts);
        let connect_plaintext = r.connect_to.as_deref().is_some_and(|v| v.starts_with("http://"));
        if connect_plaintext && !r.allow_plaintext_upstream {
            p.add(format!("{path}.connect_to"), "a cleartext http:// upstream needs `allow_plaintext_upstream: true`");
        }
        let connect_to = r.connect_to.as_deref().and_then(|v| {
            let addr = v.strip_prefix("http://").unwrap_or(v).trim_end_matches('/');
            let addr = socket_addr(p, &format!("{path}.connect_to"), addr)?;
            if connect_plaintext && !addr.ip().is_loopback() {
                p.add(format!("{path}.connect_to"), "a cleartext upstream must be on loopback");
            }
            Some(addr)
        });
        let endpoint = r.endpoint.and_then(|e| {
            let listen = socket_addr(p, &format!("{path}.endpoint.listen"), &e.listen);
            let upstream = https_url(p, &format!("{path}.endpoint.upstream"), &e.upstream, r.allow_plaintext_upstream)
                .filter(|u| canonical_base_url(p, &format!("{path}.endpoint.upstream"), &e.upstream, u));
            Some(Endpoint { listen: listen?, upstream: upstream? })
        });
        if !providers.contains_key(&r.provider) {
            p.add(format!("{path}.provider"), format!("unknown provider {:?}", r.provider));
        }
        if matches!(providers.get(&r.provider), Some(ProviderConfig::PostgresNative(_))) {
            p.add(format!("{path}.provider"), "a postgres_native provider mints database logins; an HTTP route cannot use it");
        }
        if matches!(providers.get(&r.provider), Some(ProviderConfig::Vault(VaultSettings { engine: VaultEngine::Database { .. }, .. }))) {
            p.add(format!("{path}.provider"), "a vault provider with a `database` engine mints database logins; an HTTP route needs one with `kv`");
        }
        let sigv4_provider = matches!(providers.get(&r.provider), Some(ProviderConfig::Sts(_)));
        let header = match (r.inject.header, r.inject.sigv4) {
            (Some(h), None) => h,
            (None, Some(s)) => {
                if !sigv4_provider && providers.contains_key(&r.provider) {
                    p.add(format!("{path}.provider"), "a sigv4 route needs an `sts` provider");
                }
                let inject = validate_sigv4(p, &format!("{path}.inject.sigv4"), s);
                out.push(Route {
                    name: r.name,
                    hosts,
                    connect_to,
                    connect_plaintext,
                    endpoint,
                    provider: r.provider,
                    inject: Inject::SigV4(inject),
                    allow_plaintext_upstream: r.allow_plaintext_upstream,
                });
                continue;
            }
            _ => {
                p.add(format!("{path}.inject"), "needs exactly one of `header` or `sigv4`");
                continue;
            }
        };
        if sigv4_provider {
            p.add(format!("{path}.inject"), "an `sts` provider's credentials can only be used by a `sigv4` injection");
        }
        let name = match http::HeaderName::from_bytes(header.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                p.add(format!("{path}.inject.header.name"), format!("{:?} is not a header name", header.name));
                continue;
            }
        };
        let format = header.format.unwrap_or_else(|| "{secret}".into());
        if format.matches("{secret}").count() != 1 {
            p.add(format!("{path}.inject.header.format"), "must contain {secret} exactly once");
        }
        if header.placeholder.len() < 8 {
            p.add(format!("{path}.inject.header.placeholder"), "must be at least 8 characters so it cannot be confused with a short real value");
        }
        out.push(Route {
            name: r.name,
            hosts,
            connect_to,
            endpoint,
            provider: r.provider,
            connect_plaintext,
            inject: Inject::Header(HeaderInject { name, format, placeholder: header.placeholder }),
            allow_plaintext_upstream: r.allow_plaintext_upstream,
        });
    }
    out
}

fn role(p: &mut Problems, path: &str, arn: &str) {
    let ok = arn.starts_with("arn:aws") && arn.split(':').nth(5).is_some_and(|r| r.starts_with("role/"));
    if !ok {
        p.add(path, format!("{arn:?} is not an IAM role ARN like arn:aws:iam::123456789012:role/NAME"));
    }
}

fn validate_sigv4(p: &mut Problems, path: &str, raw: super::raw::RawSigV4Inject) -> SigV4Inject {
    if raw.account_id.len() != 12 || !raw.account_id.bytes().all(|b| b.is_ascii_digit()) {
        p.add(format!("{path}.account_id"), format!("{:?} is not a 12-digit AWS account id", raw.account_id));
    }
    // Real access key ids are 16-128 characters starting AKIA/ASIA; a placeholder must not look real.
    let looks_real = raw.placeholder_access_key_id.starts_with("AKIA") || raw.placeholder_access_key_id.starts_with("ASIA");
    if raw.placeholder_access_key_id.len() < 8 || looks_real {
        p.add(format!("{path}.placeholder_access_key_id"), "must be at least 8 characters and not look like a real key id (AKIA…/ASIA…)");
    }
    let mut custom_endpoints = Vec::with_capacity(raw.custom_endpoints.len());
    for (i, e) in raw.custom_endpoints.into_iter().enumerate() {
        let at = format!("{path}.custom_endpoints[{i}]");
        if e.host.trim().is_empty() || e.host.contains(['/', '*', ' ']) {
            p.add(format!("{at}.host"), format!("{:?} is not a host or host:port", e.host));
        }
        if let Some(s) = e.service.as_deref().filter(|s| !crate::classify::aws::is_iam_prefix(s)) {
            p.add(
                format!("{at}.service"),
                format!(
                    "{s:?} is not an AWS service the broker knows (an IAM service prefix like s3, dynamodb, sqs); omit it for a host serving every service"
                ),
            );
        }
        if let Some(r) = e.region.as_deref().filter(|r| !crate::classify::aws::is_region(r)) {
            p.add(format!("{at}.region"), format!("{r:?} is not an AWS region like us-east-1; omit it to use the region each request is signed for"));
        }
        custom_endpoints.push(crate::classify::aws::CustomEndpoint { host: e.host.trim().to_ascii_lowercase(), service: e.service, region: e.region });
    }
    SigV4Inject {
        account_id: raw.account_id,
        placeholder_access_key_id: raw.placeholder_access_key_id,
        custom_endpoints,
        max_buffered_body_bytes: raw.max_buffered_body_bytes.unwrap_or(10 * 1024 * 1024),
    }
}

/// A key file (dev) or the metadata server (default; plain HTTP, link-local or loopback only).
fn gcp_identity(p: &mut Problems, path: &str, credentials_file: Option<String>, metadata_url: Option<String>, base: &Path) -> GcpIdentity {
    match (credentials_file, metadata_url) {
        (Some(_), Some(_)) => {
            p.add(format!("{path}.credentials_file"), "set either credentials_file or metadata_url, not both");
            GcpIdentity::Metadata { base_url: crate::providers::gcp::identity::default_metadata_url() }
        }
        (Some(file), None) => GcpIdentity::KeyFile { path: resolve_path(base, &file) },
        (None, Some(u)) => {
            let link_local = url::Url::parse(&u)
                .is_ok_and(|v| matches!(v.host(), Some(url::Host::Ipv4(ip)) if ip.is_link_local()) || v.host_str() == Some("metadata.google.internal"));
            let base_url = if link_local { url::Url::parse(&u).ok() } else { https_url(p, &format!("{path}.metadata_url"), &u, true) };
            GcpIdentity::Metadata { base_url: base_url.unwrap_or_else(crate::providers::gcp::identity::default_metadata_url) }
        }
        (None, None) => GcpIdentity::Metadata { base_url: crate::providers::gcp::identity::default_metadata_url() },
    }
}

fn gcp_endpoint(p: &mut Problems, path: &str, endpoint_url: Option<String>, default: &str) -> url::Url {
    let fallback = || url::Url::parse(default).expect("static URL");
    match endpoint_url {
        Some(u) => https_url(p, &format!("{path}.endpoint_url"), &u, true).unwrap_or_else(fallback),
        None => fallback(),
    }
}

fn validate_aws_secrets_manager(p: &mut Problems, path: &str, mut s: AwsSecretsManagerSettings, endpoint_url: Option<String>) -> AwsSecretsManagerSettings {
    if s.secret_id.trim().is_empty() {
        p.add(format!("{path}.secret_id"), "is required (the secret's name or ARN)");
    }
    if s.version_stage.is_some() && s.version_id.is_some() {
        p.add(format!("{path}.version_id"), "set either version_id or version_stage, not both");
    }
    if s.json_key.as_deref().is_some_and(str::is_empty) {
        p.add(format!("{path}.json_key"), "must not be empty (omit it to use the whole secret string)");
    }
    if s.region.is_empty() {
        p.add(format!("{path}.region"), "is required (the secret's region, e.g. us-east-1)");
    }
    if !(1..=43_200).contains(&s.ttl.as_secs()) {
        p.add(format!("{path}.ttl_seconds"), "must be between 1 and 43200");
    }
    if let Some(arn) = &s.rotation_lambda_arn {
        if !(arn.starts_with("arn:aws") && arn.split(':').nth(2) == Some("lambda")) {
            p.add(format!("{path}.rotation_lambda_arn"), format!("{arn:?} is not a Lambda function ARN"));
        }
    }
    // Cleartext is allowed only to loopback: an emulator such as moto in tests.
    s.endpoint_url = endpoint_url.and_then(|u| https_url(p, &format!("{path}.endpoint_url"), &u, true));
    s
}
