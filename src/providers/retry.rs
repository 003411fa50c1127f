//! Retry with exponential backoff and full jitter, then fail closed.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::ProviderError;
use crate::config::RetryConfig;

/// Minting failed for good: every attempt (one plus at most `max_retries`) failed, or a
/// non-retryable error came back. The request must be refused; nothing may be forwarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential minting failed after {attempts} attempt(s): {last_error}")]
pub struct MintFailure {
    pub attempts: u32,
    pub last_error: ProviderError,
}

/// Run `attempt` until it succeeds, it fails permanently, or `max_retries` retries are spent.
pub async fn with_retries<T, F, Fut>(cfg: &RetryConfig, mut attempt: F) -> Result<T, MintFailure>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut n = 0;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if !e.retryable || n >= cfg.max_retries => {
                return Err(MintFailure { attempts: n + 1, last_error: e });
            }
            Err(e) => {
                let delay = backoff(cfg, n);
                tracing::warn!(attempt = n + 1, error = %e, delay_ms = delay.as_millis() as u64, "credential mint attempt failed; retrying");
                tokio::time::sleep(delay).await;
                n += 1;
            }
        }
    }
}

/// Full jitter (a random delay up to the exponential cap) spreads retries of many brokers
/// hitting one provider outage, instead of having them retry in lock-step.
fn backoff(cfg: &RetryConfig, retry: u32) -> Duration {
    let cap = cfg.base_delay.saturating_mul(1u32 << retry.min(16)).min(cfg.max_delay);
    let millis = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig { max_retries: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(4) }
    }

    #[tokio::test]
    async fn gives_up_after_exactly_three_retries() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(&cfg(), |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::retryable("down"))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(r.unwrap_err().attempts, 4);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(&cfg(), |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::permanent("access denied"))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn a_later_success_is_returned() {
        let r = with_retries(&cfg(), |n| async move {
            if n < 2 {
                Err(ProviderError::retryable("x"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = RetryConfig { max_retries: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(300) };
        assert!(backoff(&c, 0) <= Duration::from_millis(100));
        assert!(backoff(&c, 5) <= Duration::from_millis(300));
        assert!(backoff(&c, 5) >= Duration::from_millis(150));
    }
}
