//! The lease cache: one credential per (agent, tenant, provider, credential scope), never served
//! after its refresh point, and concurrent cold requests for one key share one mint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::retry::MintFailure;
use super::Lease;

/// What a credential is cached under. The tenant is part of the key, so a credential minted for
/// one tenant can never be served to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub agent_id: String,
    pub tenant: String,
    pub provider: String,
    pub credential_scope: String,
}

type MintResult = Result<Arc<Lease>, Arc<MintFailure>>;

enum Slot {
    Ready(Arc<Lease>),
    Minting(Shared<BoxFuture<'static, MintResult>>),
}

/// Whether a lease came from the cache or was minted for this request (or a concurrent one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cached,
    Minted,
}

pub struct LeaseCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
    refresh_before: Duration,
    max_entries: usize,
}

impl LeaseCache {
    pub fn new(refresh_before: Duration, max_entries: usize) -> Arc<Self> {
        Arc::new(LeaseCache { slots: Mutex::new(HashMap::new()), refresh_before, max_entries })
    }

    /// A usable lease for `key`: the cached one if it is not near expiry, else one minted by `mint`.
    /// `mint` runs in its own task, so a client that disconnects does not cancel a mint others wait on.
    pub async fn get_or_mint<F>(self: &Arc<Self>, key: CacheKey, mint: F) -> Result<(Arc<Lease>, Source), Arc<MintFailure>>
    where
        F: FnOnce() -> BoxFuture<'static, Result<Lease, MintFailure>> + Send + 'static,
    {
        let waiting = {
            let mut slots = self.lock();
            match slots.get(&key) {
                Some(Slot::Ready(lease)) if self.is_fresh(lease) => return Ok((lease.clone(), Source::Cached)),
                Some(Slot::Minting(shared)) => shared.clone(),
                _ => {
                    let shared = self.spawn_mint(key.clone(), mint);
                    slots.insert(key, Slot::Minting(shared.clone()));
                    shared
                }
            }
        };
        waiting.await.map(|lease| (lease, Source::Minted))
    }

    fn spawn_mint<F>(self: &Arc<Self>, key: CacheKey, mint: F) -> Shared<BoxFuture<'static, MintResult>>
    where
        F: FnOnce() -> BoxFuture<'static, Result<Lease, MintFailure>> + Send + 'static,
    {
        let cache = self.clone();
        let task = tokio::spawn(async move {
            let result = mint().await.map(Arc::new).map_err(Arc::new);
            cache.finish_mint(key, &result);
            result
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::new(MintFailure { attempts: 0, last_error: super::ProviderError::permanent(format!("mint task failed: {e}")) })))
        }
        .boxed()
        .shared()
    }

    fn finish_mint(&self, key: CacheKey, result: &MintResult) {
        let mut slots = self.lock();
        match result {
            Ok(lease) if self.is_fresh(lease) => {
                if slots.len() >= self.max_entries {
                    self.evict_one(&mut slots);
                }
                slots.insert(key, Slot::Ready(lease.clone()));
            }
            // A failure is not cached: the next request tries again (after its own retries).
            _ => {
                slots.remove(&key);
            }
        }
    }

    fn is_fresh(&self, lease: &Lease) -> bool {
        SystemTime::now() + self.refresh_before < lease.expires_at
    }

    /// Drop expired entries; if still full, the one closest to expiry.
    fn evict_one(&self, slots: &mut HashMap<CacheKey, Slot>) {
        slots.retain(|_, s| !matches!(s, Slot::Ready(l) if !self.is_fresh(l)));
        if slots.len() < self.max_entries {
            return;
        }
        let oldest = slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready(l) => Some((l.expires_at, k.clone())),
                Slot::Minting(_) => None,
            })
            .min_by_key(|(at, _)| *at)
            .map(|(_, k)| k);
        if let Some(k) = oldest {
            slots.remove(&k);
        }
    }

    /// All leases currently held (not near expiry).
    pub fn leases(&self) -> Vec<Arc<Lease>> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(l) if self.is_fresh(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// Remove and return every cached lease matching `pred`; the next request mints afresh.
    pub fn remove_where(&self, pred: impl Fn(&Lease) -> bool) -> Vec<Arc<Lease>> {
        let mut removed = Vec::new();
        self.lock().retain(|_, s| match s {
            Slot::Ready(l) if pred(l) => {
                removed.push(l.clone());
                false
            }
            _ => true,
        });
        removed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>> {
        // A panic while holding the lock cannot leave a slot half-written (each update is one
        // insert/remove), so a poisoned lock is safe to keep using.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
