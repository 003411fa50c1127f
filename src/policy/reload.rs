//! Hot reload of the policy file.
//!
//! Polls the file's content instead of using inotify: Kubernetes updates a mounted ConfigMap by
//! swapping a symlink, which file watchers routinely miss; a poll every second costs nothing.

use std::sync::Arc;
use std::time::Duration;

use super::PolicyEngine;

pub fn spawn_reloader(engine: Arc<PolicyEngine>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match engine.reload_if_changed() {
                Ok(true) => tracing::info!(file = %engine.file().display(), "policy reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "new policy rejected; the previous policy stays in force"),
            }
        }
    })
}
