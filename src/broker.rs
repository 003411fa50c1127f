//! [`Broker`]: everything a request needs, built once from a validated config.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::admin::auth::AdminToken;
use crate::admin::grants::MintedScopes;
use crate::audit::{AuditLog, AuditRecord, RefusalAudit};
use crate::config::{Config, ProviderConfig};
use crate::identity::AgentIdentities;
use crate::listener::passthrough::OwnListeners;
use crate::listener::Tunnels;
use crate::metrics::Metrics;
use crate::policy::PolicyEngine;
use crate::postgres::registry::SessionRegistry;
use crate::providers::alert::{Alerts, WebhookSettings, WebhookSink};
use crate::providers::cache::LeaseCache;
use crate::providers::env::EnvProvider;
use crate::providers::oauth2::{OAuth2Provider, OAuth2Settings};
use crate::providers::{Identity, SharedProvider};
use crate::tls::CertificateAuthority;
use crate::upstream::{build_client, build_http1_client, client_tls_config, ConnectTo, HttpClient};

pub struct Broker {
    pub config: Arc<Config>,
    /// The sidecar's configured identity; the broker's own actions (rotate) are recorded under it.
    pub identity: Identity,
    /// Each connection's agent identity, per `identity.mode`.
    pub identities: AgentIdentities,
    pub ca: CertificateAuthority,
    pub policy: Arc<PolicyEngine>,
    pub providers: HashMap<String, SharedProvider>,
    pub cache: Arc<LeaseCache>,
    pub audit: AuditLog,
    /// Refusals outside the pipeline (unrouted, malformed, limits, admin 401/403), rate-limited.
    pub refusals: Arc<RefusalAudit>,
    pub alerts: Alerts,
    pub metrics: Arc<Metrics>,
    /// The request scope each cached lease was minted for, for `GET /v1/grants`.
    pub minted_scopes: MintedScopes,
    /// The live database sessions and their leases, for `GET /v1/grants` and revoke.
    pub sessions: Arc<SessionRegistry>,
    /// The broker API's bearer token; None disables `/v1/*`.
    pub admin_token: Option<AdminToken>,
    pub client: HttpClient,
    /// HTTP/1.1 only, for WebSocket and other upgrades.
    pub upgrade_client: HttpClient,
    /// The byte copies of upgraded connections, waited for and then closed on shutdown.
    pub tunnels: Tunnels,
    /// Where the broker's listeners are bound, once they are: passthrough tunnels never reach them.
    pub own_listeners: OwnListeners,
    ready: AtomicBool,
}

impl Broker {
    /// Build every component; any failure here stops start-up before a port is bound.
    pub async fn build(config: Config) -> anyhow::Result<Arc<Broker>> {
        let config = Arc::new(config);
        let identity = Identity { agent_id: config.identity.agent_id.clone(), tenant: config.identity.tenant.clone(), labels: config.identity.labels.clone() };
        let mut permitted: Vec<String> = config.routes.iter().flat_map(|r| r.hosts.iter().map(|h| h.dns_subtree().to_string())).collect();
        permitted.sort();
        permitted.dedup();
        let ca = CertificateAuthority::generate_with_cache(&permitted, config.tls.leaf_ttl, config.tls.leaf_cache_max_entries)?;
        ca.write_cert(&config.tls.ca_cert_path)?;
        let policy = Arc::new(PolicyEngine::load(&config.policy.file, &config.policy.query)?);
        let tls = client_tls_config(config.tls.upstream_ca_file.as_deref())?;
        let overrides = config.routes.iter().filter_map(|r| r.connect_to.map(|addr| r.hosts.iter().map(move |h| (h.clone(), addr)))).flatten().collect();
        let connect_to = ConnectTo::new(overrides, Duration::from_secs(10));
        let upgrade_client = build_http1_client(tls.clone(), connect_to.clone());
        let client = build_client(tls, connect_to);
        let providers = build_providers(&config, &client).await?;
        let identities = AgentIdentities::build(&config.identity, &client, Duration::from_secs(10)).await.context("identity")?;
        let audit = AuditLog::open_with(&config.audit.path, crate::audit::writer::WriterOptions::from(&config.audit)).context("opening the audit log")?;
        let metrics = Arc::new(Metrics::new());
        let admin_token = config.admin.token_file.as_deref().map(AdminToken::load).transpose().context("reading admin.token_file")?;
        let webhook = config.alerts.webhook_url.clone().map(|base_url| {
            let settings = WebhookSettings {
                base_url,
                queue_capacity: config.alerts.queue_capacity,
                max_attempts: config.alerts.max_attempts,
                request_timeout: Duration::from_secs(5),
            };
            WebhookSink::start(settings, client.clone(), metrics.clone())
        });
        let refusals = RefusalAudit::new(audit.clone(), &config.identity.tenant, Some(metrics.clone()));
        Ok(Arc::new(Broker {
            cache: LeaseCache::new(config.credentials.refresh_before_expiry, config.credentials.cache_max_entries),
            config,
            identity,
            identities,
            ca,
            policy,
            providers,
            refusals,
            audit,
            alerts: Alerts::new(webhook, metrics.clone()),
            metrics,
            minted_scopes: MintedScopes::default(),
            sessions: Arc::default(),
            admin_token,
            client,
            upgrade_client,
            tunnels: Tunnels::default(),
            own_listeners: OwnListeners::default(),
            ready: AtomicBool::new(false),
        }))
    }

    /// Append an audit record and wait for it to be durable.
    pub async fn audit(&self, record: AuditRecord) -> Result<u64, crate::audit::AuditError> {
        let started = std::time::Instant::now();
        let result = self.audit.append(record).await;
        self.metrics.audit_write_duration.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.audit_write_failures.inc();
        }
        result
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

async fn build_providers(config: &Config, client: &HttpClient) -> anyhow::Result<HashMap<String, SharedProvider>> {
    let mut out: HashMap<String, SharedProvider> = HashMap::new();
    for (name, p) in &config.providers {
        let provider: SharedProvider = match p {
            ProviderConfig::Env { variable, ttl } => Arc::new(EnvProvider::new(name, variable, *ttl)),
            ProviderConfig::OAuth2 { token_url, client_id, client_secret_file, scopes, scopes_by_method, audience, revocation_url } => {
                let settings = OAuth2Settings {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret_file: client_secret_file.clone(),
                    scopes: scopes.clone(),
                    scopes_by_method: scopes_by_method.clone(),
                    audience: audience.clone(),
                    revocation_url: revocation_url.clone(),
                    request_timeout: config.limits.request_timeout.min(Duration::from_secs(30)),
                };
                Arc::new(OAuth2Provider::new(name, settings, client.clone()).with_context(|| format!("providers.{name}"))?)
            }
            ProviderConfig::Sts(settings) => Arc::new(
                crate::providers::sts::StsProvider::new(name, settings, config.tls.upstream_ca_file.as_deref())
                    .await
                    .with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::AwsSecretsManager(settings) => Arc::new(
                crate::providers::aws_secrets_manager::AwsSecretsManagerProvider::new(name, settings, config.tls.upstream_ca_file.as_deref())
                    .await
                    .with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::GcpSecretManager(settings) => Arc::new(
                crate::providers::gcp::GcpSecretManagerProvider::new(name, settings.clone(), client.clone(), settings.timeout)
                    .with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::GcpAccessToken(settings) => Arc::new(
                crate::providers::gcp::GcpAccessTokenProvider::new(name, settings.clone(), client.clone(), settings.timeout)
                    .with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::AzureKeyVault(settings) => Arc::new(
                crate::providers::azure::AzureKeyVaultProvider::new(name, settings.clone(), client.clone()).with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::AzureAccessToken(settings) => Arc::new(
                crate::providers::azure::AzureAccessTokenProvider::new(name, settings.clone(), client.clone()).with_context(|| format!("providers.{name}"))?,
            ),
            ProviderConfig::PostgresNative(settings) => {
                Arc::new(crate::providers::postgres_native::PostgresNativeProvider::from_config(name, settings).with_context(|| format!("providers.{name}"))?)
            }
            ProviderConfig::Vault(settings) => {
                Arc::new(crate::providers::vault::VaultProvider::new(name, settings).with_context(|| format!("providers.{name}"))?)
            }
        };
        out.insert(name.clone(), provider);
    }
    Ok(out)
}
