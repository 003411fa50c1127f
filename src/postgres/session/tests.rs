//! The session's renewal scheduling ([`lifetime`]) with a scripted provider. No renewable provider
//! runs in these tests' reach (postgres_native cannot renew; the Vault provider's own tests belong
//! with it), so the schedule the relay selects on is checked here with a fake one: renewals ahead
//! of expiry keep the lease past its first expiry, and nothing extends it beyond what the provider
//! returned or after a renewal could not be recorded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;

use super::*;
use crate::providers::{ProviderError, Secret};

/// Answers `renew` from a script, each relative to the call time (or, with `echo`, to the lease's
/// current expiry: a provider at its limit); counts the calls.
struct Scripted {
    answers: Mutex<VecDeque<Result<Option<Duration>, ProviderError>>>,
    calls: Mutex<Vec<SystemTime>>,
    echo: Option<Duration>,
}

impl Scripted {
    fn new(answers: Vec<Result<Option<Duration>, ProviderError>>) -> Scripted {
        Scripted { answers: Mutex::new(answers.into()), calls: Mutex::default(), echo: None }
    }

    /// Every renewal answers the lease's current expiry plus `by`.
    fn echoing(by: Duration) -> Scripted {
        Scripted { echo: Some(by), ..Scripted::new(vec![]) }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl CredentialProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn kind(&self) -> &'static str {
        "test"
    }

    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        "test".into()
    }

    fn mint<'a>(&'a self, _req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        Box::pin(async { Err(ProviderError::permanent("not in this test")) })
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<SystemTime>, ProviderError>> {
        let now = SystemTime::now();
        self.calls.lock().unwrap().push(now);
        if let Some(by) = self.echo {
            let expiry = lease.expires_at + by;
            return Box::pin(async move { Ok(Some(expiry)) });
        }
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(None));
        Box::pin(async move { answer.map(|a| a.map(|d| now + d)) })
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Err(ProviderError::permanent("not in this test")) })
    }
}

fn lease(lives: Duration) -> Lease {
    Lease {
        id: "lease-test".into(),
        provider: "scripted".into(),
        credential: Credential::Password { username: "u".into(), password: Secret::new("p") },
        expires_at: SystemTime::now() + lives,
        credential_scope: "test".into(),
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: Default::default() },
        details: Default::default(),
    }
}

fn retry() -> RetryConfig {
    RetryConfig { max_retries: 2, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(20) }
}

/// Runs `lifetime` to its end; returns how long it took and the expiries `renewed` was offered.
async fn run(provider: &Scripted, lease: &mut Lease, adopt: bool) -> (Duration, Vec<SystemTime>) {
    let offered = Mutex::new(Vec::new());
    let started = Instant::now();
    lifetime(provider, lease, &retry(), |l: Lease| {
        offered.lock().unwrap().push(l.expires_at);
        async move { adopt }
    })
    .await;
    (started.elapsed(), offered.into_inner().unwrap())
}

#[tokio::test]
async fn a_renewable_lease_is_renewed_ahead_of_expiry_and_outlives_its_first_expiry() {
    // 900 ms; renewed at ~600 ms to +1 800 ms (2 400), at ~1 800 ms to +1 800 ms (3 600), then not
    // renewable (each renewal moves the expiry more than MIN_RENEWAL_PROGRESS).
    let provider = Scripted::new(vec![Ok(Some(Duration::from_millis(1800))), Ok(Some(Duration::from_millis(1800))), Ok(None)]);
    let mut lease = lease(Duration::from_millis(900));
    let first_expiry = lease.expires_at;
    let (took, offered) = run(&provider, &mut lease, true).await;
    assert_eq!(provider.calls(), 3);
    assert_eq!(offered.len(), 2);
    assert_eq!(lease.expires_at, offered[1], "the lease ends at the provider's last expiry");
    assert!(took >= Duration::from_millis(3400), "the session lived past its first expiry: {took:?}");
    // Upper bounds are loose: the machine may be busy (they only catch a lease that never ends).
    assert!(took < Duration::from_millis(8000), "{took:?}");
    // Each renewal came with about a third of the remaining lifetime left, before the expiry.
    let calls = provider.calls.lock().unwrap().clone();
    assert!(calls[0] < first_expiry && first_expiry.duration_since(calls[0]).unwrap() >= Duration::from_millis(200), "renewed too late: {calls:?}");
}

#[tokio::test]
async fn a_provider_that_cannot_renew_ends_the_lease_at_its_expiry() {
    let provider = Scripted::new(vec![]);
    let mut lease = lease(Duration::from_millis(600));
    let expiry = lease.expires_at;
    let (took, offered) = run(&provider, &mut lease, true).await;
    assert_eq!((provider.calls(), offered.len()), (1, 0));
    assert_eq!(lease.expires_at, expiry);
    assert!(took >= Duration::from_millis(550) && took < Duration::from_millis(4000), "{took:?}");
}

#[tokio::test]
async fn a_failing_renewal_is_retried_then_the_lease_runs_out() {
    let provider = Scripted::new(vec![Err(ProviderError::retryable("down")), Err(ProviderError::retryable("down")), Err(ProviderError::retryable("down"))]);
    let mut lease = lease(Duration::from_millis(600));
    let expiry = lease.expires_at;
    let (took, offered) = run(&provider, &mut lease, true).await;
    assert_eq!(provider.calls(), 3, "one attempt and max_retries retries");
    assert!(offered.is_empty());
    assert_eq!(lease.expires_at, expiry);
    assert!(took < Duration::from_millis(4000), "{took:?}");
}

#[tokio::test]
async fn nothing_extends_a_lease_beyond_what_the_provider_returned_or_could_be_recorded() {
    // The source shortens the lease: it ends then (not recorded as a renewal), and no further
    // renewal is tried (the 60 s answer is never asked for).
    let provider = Scripted::new(vec![Ok(Some(Duration::from_millis(50))), Ok(Some(Duration::from_secs(60)))]);
    let mut lease = lease(Duration::from_millis(600));
    let expiry = lease.expires_at;
    let (took, offered) = run(&provider, &mut lease, true).await;
    assert_eq!((provider.calls(), offered.len()), (1, 0));
    assert!(lease.expires_at < expiry, "the shorter expiry is adopted");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A renewal that could not be recorded (audit down) is not adopted: the old expiry stands.
    let provider = Scripted::new(vec![Ok(Some(Duration::from_secs(60)))]);
    let mut lease = super::tests::lease(Duration::from_millis(600));
    let expiry = lease.expires_at;
    let (took, offered) = run(&provider, &mut lease, false).await;
    assert_eq!((provider.calls(), offered.len()), (1, 1));
    assert_eq!(lease.expires_at, expiry);
    assert!(took < Duration::from_millis(4000), "{took:?}");
}

#[tokio::test]
async fn a_renewal_that_does_not_move_the_expiry_is_no_renewal_and_the_lease_runs_out() {
    // The provider answers the same expiry (a Vault lease at its max_ttl), then one less than
    // MIN_RENEWAL_PROGRESS later: neither is offered for recording, and no second renewal is asked.
    for by in [Duration::ZERO, MIN_RENEWAL_PROGRESS / 2] {
        let provider = Scripted::echoing(by);
        let mut lease = lease(Duration::from_millis(600));
        let expiry = lease.expires_at;
        let (took, offered) = run(&provider, &mut lease, true).await;
        assert_eq!((provider.calls(), offered.len()), (1, 0), "by {by:?}");
        assert_eq!(lease.expires_at, expiry, "by {by:?}");
        assert!(took >= Duration::from_millis(550) && took < Duration::from_millis(4000), "by {by:?}: {took:?}");
    }
    // Enough progress is a renewal.
    let provider = Scripted::echoing(MIN_RENEWAL_PROGRESS);
    let mut lease = lease(Duration::from_millis(600));
    let expiry = lease.expires_at;
    let (_, offered) = run(&provider, &mut lease, false).await;
    assert_eq!(offered, [expiry + MIN_RENEWAL_PROGRESS]);
}
