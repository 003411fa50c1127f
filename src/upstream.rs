//! The pooled upstream client: hyper-util over rustls, HTTP/1.1 and HTTP/2 by ALPN.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use crate::config::HostPattern;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type Body = BoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpsConnector<ConnectTo>, Body>;

/// Dials a configured address instead of resolving the host for some hosts (VPC endpoints,
/// emulators, tests). The URI, and so TLS server name verification, keeps the real host.
#[derive(Clone)]
pub struct ConnectTo {
    overrides: Arc<Vec<(HostPattern, SocketAddr)>>,
    inner: HttpConnector,
}

impl ConnectTo {
    pub fn new(overrides: Vec<(HostPattern, SocketAddr)>, connect_timeout: Duration) -> Self {
        let mut inner = HttpConnector::new();
        inner.enforce_http(false);
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(connect_timeout));
        ConnectTo { overrides: Arc::new(overrides), inner }
    }
}

impl tower::Service<Uri> for ConnectTo {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = uri.host().and_then(|h| self.overrides.iter().find(|(p, _)| p.matches(h)).map(|(_, a)| *a));
        let dial = match target {
            Some(addr) => format!("http://{addr}").parse().unwrap_or(uri),
            None => uri,
        };
        let fut = self.inner.call(dial);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// TLS settings for upstream connections: the public web roots plus an optional extra CA bundle.
pub fn client_tls_config(extra_ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))? {
            let cert = cert.map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| anyhow::anyhow!("adding a CA from {}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The pooled client used for every upstream request and for providers' own HTTP calls.
/// It offers h2 and http/1.1 by ALPN.
pub fn build_client(tls: rustls::ClientConfig, connect_to: ConnectTo) -> HttpClient {
    pooled(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_all_versions().wrap_connector(connect_to))
}

/// A client that offers only http/1.1, for protocol upgrades (WebSocket): `Upgrade` does not
/// exist in HTTP/2, so such a request must not land on a pooled h2 connection.
pub fn build_http1_client(tls: rustls::ClientConfig, connect_to: ConnectTo) -> HttpClient {
    pooled(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(connect_to))
}

fn pooled(https: HttpsConnector<ConnectTo>) -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(64).build(https)
}

/// Box any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed()
}

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(http_body_util::Full::new(bytes.into()))
}
