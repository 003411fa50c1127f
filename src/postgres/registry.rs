//! The live database sessions: each Postgres session's lease, listed by `GET /v1/grants` next to
//! the cached leases and revocable through the broker API like them.
//!
//! Whoever takes a session's entry out of the registry revokes its lease at the source, exactly
//! once: the session itself when it ends ([`Registration::release`] says whether it still owned
//! the entry), or a revoke through the API ([`SessionRegistry::take_where`]), which ends the
//! session first (dropping the entry's stop sender is the signal) and waits for it to be gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::classify::Scope;
use crate::providers::Lease;

#[derive(Default)]
pub struct SessionRegistry {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    lease: Lease,
    database: String,
    session_id: String,
    scope: Scope,
    /// Dropped (never sent on) when the entry is taken: the session's [`Registration::stopped`] fires.
    _stop: watch::Sender<()>,
    /// Closes when the session's [`Registration`] is gone, i.e. its upstream connection is closed.
    ended: watch::Receiver<()>,
}

/// One live session as `GET /v1/grants` shows it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub lease: Lease,
    pub database: String,
    pub session_id: String,
    pub scope: Scope,
}

/// A session taken out of the registry to be revoked: it has been told to stop.
pub struct TakenSession {
    pub session: LiveSession,
    ended: watch::Receiver<()>,
}

impl TakenSession {
    /// Waits (at most `within`) for the session to have closed both connections; false on timeout.
    pub async fn wait_ended(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async { while self.ended.changed().await.is_ok() {} }).await.is_ok()
    }
}

/// A session's hold on its entry; deregisters on drop.
pub struct Registration {
    registry: Arc<SessionRegistry>,
    lease_id: String,
    stop: watch::Receiver<()>,
    _ended: watch::Sender<()>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session's lease (keyed by the lease id) until the returned registration is released or dropped.
    pub fn register(self: &Arc<Self>, lease: &Lease, database: &str, session_id: &str, scope: &Scope) -> Registration {
        let (stop_tx, stop_rx) = watch::channel(());
        let (ended_tx, ended_rx) = watch::channel(());
        let entry = Entry {
            lease: lease.clone(),
            database: database.to_string(),
            session_id: session_id.to_string(),
            scope: scope.clone(),
            _stop: stop_tx,
            ended: ended_rx,
        };
        self.lock().insert(lease.id.clone(), entry);
        Registration { registry: self.clone(), lease_id: lease.id.clone(), stop: stop_rx, _ended: ended_tx }
    }

    /// Every live session, soonest expiry first.
    pub fn list(&self) -> Vec<LiveSession> {
        let mut out: Vec<LiveSession> = self
            .lock()
            .values()
            .map(|e| LiveSession { lease: e.lease.clone(), database: e.database.clone(), session_id: e.session_id.clone(), scope: e.scope.clone() })
            .collect();
        out.sort_by_key(|s| s.lease.expires_at);
        out
    }

    /// Takes every session whose lease matches out of the registry: each is told to stop, and
    /// the caller now owns the revocation at the source.
    pub fn take_where(&self, mut matches: impl FnMut(&Lease) -> bool) -> Vec<TakenSession> {
        let mut entries = self.lock();
        let ids: Vec<String> = entries.iter().filter(|(_, e)| matches(&e.lease)).map(|(id, _)| id.clone()).collect();
        ids.into_iter()
            .filter_map(|id| entries.remove(&id))
            .map(|e| TakenSession { session: LiveSession { lease: e.lease, database: e.database, session_id: e.session_id, scope: e.scope }, ended: e.ended })
            .collect()
    }

    /// A renewed lease's new expiry, for the listing.
    fn set_expiry(&self, lease_id: &str, expires_at: SystemTime) {
        if let Some(e) = self.lock().get_mut(lease_id) {
            e.lease.expires_at = expires_at;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registration {
    /// Resolves once the session has been revoked through the API (its entry was taken).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move { while stop.changed().await.is_ok() {} }
    }

    pub fn set_expiry(&self, expires_at: SystemTime) {
        self.registry.set_expiry(&self.lease_id, expires_at);
    }

    /// Deregisters; true when the session still owned its entry, so it must revoke its lease
    /// itself (false: a revoke through the API took it and revokes it).
    pub fn release(self) -> bool {
        self.registry.lock().remove(&self.lease_id).is_some()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.lease_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Credential, Identity, Secret};

    fn lease(id: &str, agent: &str) -> Lease {
        Lease {
            id: id.into(),
            provider: "pg".into(),
            credential: Credential::Password { username: "u".into(), password: Secret::new("p".to_string()) },
            expires_at: SystemTime::now() + Duration::from_secs(60),
            credential_scope: "cs".into(),
            identity: Identity { agent_id: agent.into(), tenant: "acme".into(), labels: Default::default() },
            details: Default::default(),
        }
    }

    fn scope() -> Scope {
        Scope { service: "postgres".into(), region: None, permissions: vec![] }
    }

    #[tokio::test]
    async fn a_taken_session_is_told_to_stop_and_its_own_release_does_not_revoke_again() {
        let registry = Arc::new(SessionRegistry::default());
        let a = registry.register(&lease("lease-a", "agent-1"), "shop", "pgs-a", &scope());
        let b = registry.register(&lease("lease-b", "agent-2"), "shop", "pgs-b", &scope());
        assert_eq!(registry.list().len(), 2);
        let mut taken = registry.take_where(|l| l.identity.agent_id == "agent-1");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].session.session_id, "pgs-a");
        tokio::time::timeout(Duration::from_secs(1), a.stopped()).await.expect("the session was told to stop");
        assert!(!taken[0].wait_ended(Duration::from_millis(50)).await, "not ended while the registration lives");
        assert!(!a.release(), "the revoke owns the lease now");
        assert!(taken[0].wait_ended(Duration::from_secs(1)).await);
        assert_eq!(registry.list().len(), 1);
        assert!(b.release(), "an untouched session revokes its own lease");
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_renewed_expiry_shows_in_the_listing_and_a_dropped_registration_deregisters() {
        let registry = Arc::new(SessionRegistry::default());
        let r = registry.register(&lease("lease-a", "agent-1"), "shop", "pgs-a", &scope());
        let later = SystemTime::now() + Duration::from_secs(3600);
        r.set_expiry(later);
        assert_eq!(registry.list()[0].lease.expires_at, later);
        drop(r);
        assert!(registry.is_empty());
    }
}
