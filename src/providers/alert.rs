//! The "Credential Minting Failure" alert: raised when minting fails closed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The alert's name, as operators search for it.
pub const MINTING_FAILURE: &str = "Credential Minting Failure";

/// Counts alerts raised (exported as a metric) and writes each as an error-level structured event.
#[derive(Debug, Default)]
pub struct Alerts {
    raised: AtomicU64,
}

impl Alerts {
    pub fn minting_failure(&self, provider: &str, agent_id: &str, tenant: &str, attempts: u32, error: &str) {
        self.raised.fetch_add(1, Ordering::Relaxed);
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
    }

    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }
}
