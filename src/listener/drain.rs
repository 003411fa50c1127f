//! Graceful drain: connections finish their in-flight requests on shutdown, within a grace period.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// Byte copies of upgraded connections (WebSocket after a 101). Once hyper hands a connection
/// off for an upgrade it is no longer a hyper connection, so [`Drain`] cannot see it; these are
/// tracked here instead, waited for on shutdown and closed when the grace period is over.
#[derive(Clone, Default)]
pub struct Tunnels {
    tracker: TaskTracker,
    closing: CancellationToken,
}

impl Tunnels {
    /// Run `copy` until it ends or the drain's grace period is over. Refused (false, `copy`
    /// dropped, so both connections close) once that has happened.
    pub fn spawn<F>(&self, copy: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.closing.is_cancelled() {
            return false;
        }
        let closing = self.closing.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = copy => {}
                () = closing.cancelled() => tracing::info!("grace period over; closing an upgraded connection"),
            }
        });
        true
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Wait up to `grace` for every tunnel to end by itself, then close the rest. True if none
    /// had to be closed.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        let ended = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        self.closing.cancel();
        self.tracker.wait().await;
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tunnels_are_waited_for_then_closed_when_the_grace_period_is_over() {
        let tunnels = Tunnels::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        assert!(tunnels.spawn(async move {
            let _ = done_rx.await;
        }));
        assert!(tunnels.spawn(std::future::pending()));
        assert_eq!(tunnels.len(), 2);
        let waiting = tokio::spawn({
            let t = tunnels.clone();
            async move { t.drain(Duration::from_millis(300)).await }
        });
        let _ = done_tx.send(());
        // The one that never ends is closed after the grace period; drain reports it.
        assert!(!waiting.await.unwrap());
        assert!(tunnels.is_empty());
        assert!(!tunnels.spawn(async {}), "no new tunnel once the drain has closed them");
    }

    #[tokio::test]
    async fn a_drain_with_no_open_tunnel_returns_at_once() {
        let tunnels = Tunnels::default();
        assert!(tunnels.spawn(async {}));
        assert!(tokio::time::timeout(Duration::from_secs(1), tunnels.drain(Duration::from_secs(30))).await.unwrap());
    }
}
