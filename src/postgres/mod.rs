//! The Postgres listener: agents connect on loopback with no password (or, per `identity.mode`,
//! with their JWT as the password or a client certificate); each session gets a user minted just
//! for it, and every statement is checked against policy before it reaches the server.

pub mod registry;
pub mod session;
pub mod settings;
pub mod statements;
pub mod tls;
pub mod upstream;
pub mod wire;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::config::DatabaseConfig as DatabaseListener;

use crate::broker::Broker;

/// Accept agent connections on `listener` for `db` until the task is dropped. `keys` are shared
/// with the transparent listener's sessions for the same database, so a cancel works either way.
/// `budget` is the listener's own (a connection is waiting, and may be evicted, until its agent
/// has identified itself: see [`crate::listener::budget`]).
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, db: Arc<DatabaseListener>, keys: CancelKeys, budget: crate::listener::ConnectionBudget) {
    if db.tls.sslmode == crate::config::SslMode::Disable && !tls::is_loopback_host(&db.upstream_host) {
        tracing::warn!(
            database = %db.name,
            upstream = %db.upstream,
            "sslmode is disable for a database that is not on loopback: its sessions, and the password of each minted user, cross the network in cleartext"
        );
    }
    let refusals = broker.refusals.clone();
    crate::listener::accept_loop(listener, budget, refusals, move |stream, _| session::serve(broker.clone(), db.clone(), keys.clone(), stream)).await
}

/// The `BackendKeyData` (process id and secret key, 8 bytes) of every live session of one
/// listener: a `CancelRequest` is passed upstream only for a key the server gave one of them.
#[derive(Clone, Default)]
pub struct CancelKeys(Arc<std::sync::Mutex<std::collections::HashSet<[u8; 8]>>>);

impl CancelKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 8]>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, key: [u8; 8]) {
        self.lock().insert(key);
    }

    pub fn remove(&self, key: &[u8; 8]) {
        self.lock().remove(key);
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        <[u8; 8]>::try_from(key).is_ok_and(|k| self.lock().contains(&k))
    }
}
