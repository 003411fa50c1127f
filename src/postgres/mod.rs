//! The Postgres listener: agents connect on loopback with no password; each session gets a user
//! minted just for it, and every statement is checked against policy before it reaches the server.

pub mod session;
pub mod upstream;
pub mod wire;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use crate::config::DatabaseConfig as DatabaseListener;

use crate::broker::Broker;

/// Accept agent connections on `listener` for `db` until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, db: DatabaseListener, connections: Arc<Semaphore>) {
    let db = Arc::new(db);
    crate::listener::accept_loop(listener, connections, "postgres", move |stream, _| session::serve(broker.clone(), db.clone(), stream)).await
}
