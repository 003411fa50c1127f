use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::providers::{Credential, Identity, ProviderError, Secret};

fn key(tenant: &str) -> CacheKey {
    CacheKey { agent_id: "a".into(), tenant: tenant.into(), provider: "p".into(), credential_scope: "s".into() }
}

fn lease(ttl: Duration) -> Lease {
    Lease {
        id: crate::providers::new_lease_id(),
        provider: "p".into(),
        credential: Credential::Token(Secret::new("s3cr3t")),
        expires_at: SystemTime::now() + ttl,
        credential_scope: "s".into(),
        identity: Identity { agent_id: "a".into(), tenant: "t".into(), labels: Default::default() },
        details: Default::default(),
    }
}

#[tokio::test]
async fn hundred_concurrent_cold_requests_mint_once() {
    let cache = LeaseCache::new(Duration::from_secs(1), 100);
    let mints = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, mints) = (cache.clone(), mints.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_mint(key("t"), move || {
                    async move {
                        mints.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(lease(Duration::from_secs(60)))
                    }
                    .boxed()
                })
                .await
                .map(|(l, _)| l.id.clone())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(mints.load(Ordering::SeqCst), 1);
    assert_eq!(ids.len(), 1);
    let (_, source) = cache.get_or_mint(key("t"), || async { unreachable!() }.boxed()).await.unwrap();
    assert_eq!(source, Source::Cached);
}

#[tokio::test]
async fn tenants_never_share_and_stale_leases_are_reminted() {
    let cache = LeaseCache::new(Duration::from_secs(30), 100);
    let (a, _) = cache.get_or_mint(key("t1"), || async { Ok(lease(Duration::from_secs(60))) }.boxed()).await.unwrap();
    let (b, src) = cache.get_or_mint(key("t2"), || async { Ok(lease(Duration::from_secs(60))) }.boxed()).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(src, Source::Minted);
    // Lives 10s but must be refreshed 30s before expiry: never served from cache.
    let (c, _) = cache.get_or_mint(key("t3"), || async { Ok(lease(Duration::from_secs(10))) }.boxed()).await.unwrap();
    let (d, src) = cache.get_or_mint(key("t3"), || async { Ok(lease(Duration::from_secs(10))) }.boxed()).await.unwrap();
    assert_ne!(c.id, d.id);
    assert_eq!(src, Source::Minted);
}

#[tokio::test]
async fn failures_are_not_cached_and_revoked_leases_are_gone() {
    let cache = LeaseCache::new(Duration::from_secs(1), 100);
    let err =
        cache.get_or_mint(key("t"), || async { Err(MintFailure { attempts: 4, last_error: ProviderError::retryable("down") }) }.boxed()).await.unwrap_err();
    assert_eq!(err.attempts, 4);
    let (l, _) = cache.get_or_mint(key("t"), || async { Ok(lease(Duration::from_secs(60))) }.boxed()).await.unwrap();
    assert_eq!(cache.leases().len(), 1);
    let removed = cache.remove_where(|x| x.id == l.id);
    assert_eq!(removed.len(), 1);
    assert!(cache.leases().is_empty());
}
