//! Graceful drain: connections finish their in-flight requests on shutdown, within a grace period.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};

/// Shared by every listener, including connections opened inside CONNECT tunnels.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Mutex<Option<GracefulShutdown>>>,
}

impl Drain {
    pub fn new() -> Self {
        Drain { inner: Arc::new(Mutex::new(Some(GracefulShutdown::new()))) }
    }

    /// A watcher for a new connection, or `None` once draining has begun (refuse the connection).
    pub fn watcher(&self) -> Option<Watcher> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(GracefulShutdown::watcher)
    }

    /// Ask every connection to finish and wait up to `grace` for them.
    pub async fn drain(&self, grace: Duration) -> bool {
        let Some(graceful) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take() else { return true };
        tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
    }
}
