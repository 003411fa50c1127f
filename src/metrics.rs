//! Prometheus metrics, served as text exposition on the admin listener's `/metrics`.
//!
//! Built on `prometheus-client` (the official Rust client): it owns the exposition format's
//! escaping, `# TYPE`/`# HELP` lines and histogram buckets, which are easy to get subtly wrong by hand.
//! Labels never carry identities, lease ids or secrets: only route, provider and outcome names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The crate writes OpenMetrics text (the Prometheus text format plus `# EOF`); Prometheus
/// negotiates and parses it natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcome {
    pub route: String,
    /// `forwarded`, or the refusal's error code (`policy_denied`, `credential_minting_failed`…).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabel {
    pub endpoint: &'static str,
    pub status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s: covers a local fsync as well as a slow STS call with retries.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the broker exports. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteOutcome, Counter>,
    pub policy_decisions: Family<DecisionLabel, Counter>,
    pub mint_duration: HistogramFamily<ProviderLabel>,
    pub cache_lookups: Family<ResultLabel, Counter>,
    pub active_leases: Gauge,
    pub database_sessions: Gauge,
    pub mint_retries: Family<ProviderLabel, Counter>,
    pub minting_failures: Family<ProviderLabel, Counter>,
    pub audit_write_duration: Histogram,
    pub audit_write_failures: Counter,
    pub alert_deliveries: Family<ResultLabel, Counter>,
    pub admin_requests: Family<AdminLabel, Counter>,
    pub revocations: Counter,
    pub refusals: Family<CodeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("credential_broker");
        let requests = Family::<RouteOutcome, Counter>::default();
        registry.register("requests", "Requests through the proxy and endpoint listeners, by route and outcome", requests.clone());
        let policy_decisions = Family::<DecisionLabel, Counter>::default();
        registry.register("policy_decisions", "Policy decisions, by decision", policy_decisions.clone());
        let mint_duration: HistogramFamily<ProviderLabel> = Family::new_with_constructor(latency_histogram);
        registry.register("mint_duration_seconds", "Time to mint a credential, retries included, by provider", mint_duration.clone());
        let cache_lookups = Family::<ResultLabel, Counter>::default();
        registry.register("cache_lookups", "Lease cache lookups, by result (hit or miss)", cache_lookups.clone());
        let active_leases = Gauge::default();
        registry.register("active_leases", "Leases currently held in the cache", active_leases.clone());
        let database_sessions = Gauge::default();
        registry.register("database_sessions", "Open database sessions, each holding its own lease", database_sessions.clone());
        let mint_retries = Family::<ProviderLabel, Counter>::default();
        registry.register("mint_retries", "Mint attempts retried after a retryable provider error, by provider", mint_retries.clone());
        let minting_failures = Family::<ProviderLabel, Counter>::default();
        registry.register("minting_failures", "Mints that failed closed (Credential Minting Failure alerts), by provider", minting_failures.clone());
        let audit_write_duration = latency_histogram();
        registry.register("audit_write_duration_seconds", "Time from submitting an audit record to it being fsync'd", audit_write_duration.clone());
        let audit_write_failures = Counter::default();
        registry.register("audit_write_failures", "Audit records that could not be written (requests failed closed)", audit_write_failures.clone());
        let alert_deliveries = Family::<ResultLabel, Counter>::default();
        registry.register("alert_webhook_deliveries", "Alert webhook deliveries, by result (sent, failed, dropped)", alert_deliveries.clone());
        let admin_requests = Family::<AdminLabel, Counter>::default();
        registry.register("admin_requests", "Admin listener requests, by endpoint and status", admin_requests.clone());
        let revocations = Counter::default();
        registry.register("revocations", "Leases revoked through the broker API", revocations.clone());
        let refusals = Family::<CodeLabel, Counter>::default();
        registry.register("refusals", "Refusals outside the request pipeline (unrouted, malformed, connection limits…), by code", refusals.clone());
        Metrics {
            registry,
            requests,
            policy_decisions,
            mint_duration,
            cache_lookups,
            active_leases,
            database_sessions,
            mint_retries,
            minting_failures,
            audit_write_duration,
            audit_write_failures,
            alert_deliveries,
            admin_requests,
            revocations,
            refusals,
        }
    }

    /// A refusal outside the request pipeline (counted even when its audit record is aggregated).
    pub fn refusal(&self, code: &'static str) {
        self.refusals.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn request(&self, route: &str, outcome: &str) {
        self.requests.get_or_create(&RouteOutcome { route: route.into(), outcome: outcome.into() }).inc();
    }

    pub fn policy_decision(&self, allow: bool) {
        self.policy_decisions.get_or_create(&DecisionLabel { decision: if allow { "allow" } else { "deny" } }).inc();
    }

    pub fn cache_lookup(&self, hit: bool) {
        self.cache_lookups.get_or_create(&ResultLabel { result: if hit { "hit" } else { "miss" } }).inc();
    }

    pub fn mint_observed(&self, provider: &str, took: Duration) {
        self.mint_duration.get_or_create(&ProviderLabel { provider: provider.into() }).observe(took.as_secs_f64());
    }

    pub fn mint_retry(&self, provider: &str) {
        self.mint_retries.get_or_create(&ProviderLabel { provider: provider.into() }).inc();
    }

    pub fn minting_failure(&self, provider: &str) {
        self.minting_failures.get_or_create(&ProviderLabel { provider: provider.into() }).inc();
    }

    pub fn alert_delivery(&self, result: &'static str) {
        self.alert_deliveries.get_or_create(&ResultLabel { result }).inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_carry_the_prefix_and_types() {
        let m = Metrics::new();
        m.request("github", "forwarded");
        m.mint_observed("idp", Duration::from_millis(12));
        m.cache_lookup(true);
        let text = m.encode();
        assert!(text.contains("credential_broker_requests_total{route=\"github\",outcome=\"forwarded\"} 1"), "{text}");
        assert!(text.contains("# TYPE credential_broker_mint_duration_seconds histogram"), "{text}");
        assert!(text.contains("credential_broker_cache_lookups_total{result=\"hit\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
