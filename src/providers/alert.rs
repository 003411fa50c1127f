//! The "Credential Minting Failure" alert: raised when minting fails closed, resolved when minting
//! for that provider works again. Sinks: the log (error level, structured), metrics, and optionally
//! an Alertmanager-compatible webhook.

mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use webhook::{AlertmanagerAlert, WebhookSettings, WebhookSink};

use crate::metrics::Metrics;

/// The alert's name, as operators search for it.
pub const MINTING_FAILURE: &str = "Credential Minting Failure";

/// While a provider keeps failing, the firing alert is re-sent this often so Alertmanager does not
/// resolve it on its own (its default `resolve_timeout` is 5 minutes).
const REFIRE_AFTER: Duration = Duration::from_secs(60);

struct Firing {
    alert: AlertmanagerAlert,
    last_sent: SystemTime,
}

/// Raises and resolves alerts. Never blocks: webhook delivery happens in its own task.
#[derive(Default)]
pub struct Alerts {
    raised: AtomicU64,
    firing: Mutex<HashMap<String, Firing>>,
    webhook: Option<WebhookSink>,
    metrics: Option<Arc<Metrics>>,
}

impl Alerts {
    pub fn new(webhook: Option<WebhookSink>, metrics: Arc<Metrics>) -> Alerts {
        Alerts { webhook, metrics: Some(metrics), ..Default::default() }
    }

    pub fn minting_failure(&self, provider: &str, agent_id: &str, tenant: &str, attempts: u32, error: &str) {
        self.raised.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.minting_failure(provider);
        }
        tracing::error!(
            alert = MINTING_FAILURE,
            severity = "critical",
            provider,
            agent_id,
            tenant,
            attempts,
            error,
            "{MINTING_FAILURE}: provider {provider} failed {attempts} time(s); failing closed"
        );
        let now = SystemTime::now();
        let to_send = {
            let mut firing = self.lock();
            match firing.get_mut(provider) {
                Some(f) if now.duration_since(f.last_sent).unwrap_or_default() < REFIRE_AFTER => None,
                Some(f) => {
                    f.last_sent = now;
                    Some(f.alert.clone())
                }
                None => {
                    let description = format!("provider {provider} failed {attempts} time(s) for agent {agent_id} (tenant {tenant}); failing closed: {error}");
                    let alert = AlertmanagerAlert::firing(MINTING_FAILURE, provider, description, now);
                    firing.insert(provider.to_string(), Firing { alert: alert.clone(), last_sent: now });
                    Some(alert)
                }
            }
        };
        if let (Some(alert), Some(sink)) = (to_send, &self.webhook) {
            sink.send(alert);
        }
    }

    /// Minting for `provider` worked: resolve its alert if one is firing.
    pub fn minting_recovered(&self, provider: &str) {
        let Some(firing) = self.lock().remove(provider) else { return };
        tracing::info!(alert = MINTING_FAILURE, provider, "{MINTING_FAILURE} resolved: provider {provider} mints again");
        if let Some(sink) = &self.webhook {
            sink.send(firing.alert.resolved(SystemTime::now()));
        }
    }

    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Firing>> {
        self.firing.lock().unwrap_or_else(|e| e.into_inner())
    }
}
