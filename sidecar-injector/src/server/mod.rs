//! The HTTPS admission webhook server.

mod routes;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::InjectorConfig;
pub use routes::{HEALTHZ_PATH, MAX_BODY_BYTES, MUTATE_ANNOTATED_PATH, MUTATE_PATH};
pub use tls::{ReloadingCert, TlsError};

/// Knobs of the server that are not part of the injection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How often the certificate files are checked for changes.
    pub cert_reload_interval: Duration,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown is requested.
    pub drain_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { cert_reload_interval: Duration::from_secs(5), handshake_timeout: Duration::from_secs(10), drain_grace: Duration::from_secs(10) }
    }
}

/// Serves the webhook on `listener` until `shutdown` resolves, then drains.
///
/// The caller binds the listener, so tests can bind `127.0.0.1:0` and know the address before
/// the first request.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<ReloadingCert>,
    config: Arc<InjectorConfig>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError> {
    let acceptor = TlsAcceptor::from(cert.server_config()?);
    let watcher = tokio::spawn(cert.clone().watch(settings.cert_reload_interval));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let config = config.clone();
        let watch = graceful.watcher();
        let handshake_timeout = settings.handshake_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let config = config.clone();
                async move { Ok::<_, Infallible>(routes::handle(request, &config).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watch.watch(connection).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    watcher.abort();
    if tokio::time::timeout(settings.drain_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain grace period over; dropping remaining connections");
    }
    Ok(())
}
