//! Test harness: a test CA, the real webhook server on `127.0.0.1:0`, and an HTTPS client that
//! trusts only that CA and reports the certificate it was served.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use sidecar_injector::server::{serve, ReloadingCert, ServerSettings};
use sidecar_injector::InjectorConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// The name the client asks for; the leaf certificates carry it (as cert-manager's carry the
/// Service's DNS names).
pub const SERVER_NAME: &str = "sidecar-injector.credential-broker-system.svc";

/// A CA like cert-manager's CA Issuer: the client trusts it, so a rotated leaf is accepted.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and key, as in cert-manager's `tls.crt` / `tls.key`.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca cert");
        TestCa { issuer }
    }

    /// A fresh serving certificate with its own key.
    pub fn leaf(&self) -> Leaf {
        let params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }
}

/// The certificate and key written as cert-manager's Secret appears in a pod: each file a
/// symlink through `..data`, which the kubelet swaps atomically to a new timestamped directory.
pub struct CertDir {
    dir: tempfile::TempDir,
    generation: u32,
}

impl CertDir {
    pub fn new(leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut certs = CertDir { dir, generation: 0 };
        certs.write(leaf);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), certs.dir.path().join(file)).expect("file symlink");
        }
        certs
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Writes `leaf` into a new directory and swaps `..data` to it in one rename.
    pub fn write(&mut self, leaf: &Leaf) {
        self.generation += 1;
        let name = format!("..gen_{}", self.generation);
        let target = self.dir.path().join(&name);
        std::fs::create_dir(&target).expect("generation dir");
        std::fs::write(target.join("tls.crt"), &leaf.cert_pem).expect("write cert");
        std::fs::write(target.join("tls.key"), &leaf.key_pem).expect("write key");
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &staged).expect("stage symlink");
        std::fs::rename(&staged, self.dir.path().join("..data")).expect("swap ..data");
    }
}

/// The webhook server, serving until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: TestCa,
    pub certs: CertDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts the server with the default injector config.
    pub async fn start() -> Self {
        Self::start_with(InjectorConfig::default(), Duration::from_secs(3600)).await
    }

    /// Starts the server with `config`, checking the certificate files every `reload_interval`.
    pub async fn start_with(config: InjectorConfig, reload_interval: Duration) -> Self {
        let ca = TestCa::new();
        let certs = CertDir::new(&ca.leaf());
        let cert = ReloadingCert::load(&certs.cert_path(), &certs.key_path()).expect("load serving cert");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let settings = ServerSettings { cert_reload_interval: reload_interval, ..ServerSettings::default() };
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(listener, cert, Arc::new(config), settings, shutdown).await.expect("server failed");
        });
        let server = TestServer { addr, ca, certs, shutdown: Some(shutdown), task: Some(task) };
        // The listener is bound, so connecting cannot race; this proves TLS and routing work.
        let health = server.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK);
        server
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> Answer {
        self.send(Method::POST, path, body).await
    }

    /// One request on a new connection, as the API server may do.
    pub async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.root()).expect("trust test ca");
        let config = rustls::ClientConfig::builder_with_provider(sidecar_injector::server::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let name = ServerName::try_from(SERVER_NAME).expect("server name");
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("tls handshake");
        let served = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).expect("served cert").clone().into_owned();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("http handshake");
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, SERVER_NAME)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        Answer { status, content_type, body, served }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the server answered.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The leaf certificate presented in the handshake.
    pub served: CertificateDer<'static>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| panic!("answer is not JSON ({err}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Polls `check` until it holds or `timeout` passes; the condition, not the clock, ends the wait.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
