//! The webhook's serving certificate, read from the files cert-manager writes and reloaded
//! when they change.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink to a new directory, and
//! cert-manager may write the certificate and the key a moment apart. So the files are polled,
//! their *contents* compared (mtimes can be equal within a second, and symlinks hide them), and
//! a new pair is only taken when the key matches the certificate; until then the old pair keeps
//! serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why a certificate/key pair could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate")]
    NoCertificate {
        /// The file.
        path: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key: {message}")]
    NoKey {
        /// The file.
        path: String,
        /// Parser message.
        message: String,
    },
    /// rustls refused the pair (unsupported key, or key and certificate do not match).
    #[error("certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS crypto provider: ring, to keep the webhook's build light.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate resolver whose pair is replaced when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// File contents the current pair was built from, to notice changes cheaply.
    loaded_from: Mutex<(Vec<u8>, Vec<u8>)>,
    provider: Arc<CryptoProvider>,
}

impl ReloadingCert {
    /// Loads the pair now; failing here stops start-up (better than serving without TLS).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key(&cert_pem, &key_pem, cert_path, key_path, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded_from: Mutex::new((cert_pem, key_pem)),
            provider,
        }))
    }

    /// Re-reads the files; returns whether a new pair is now served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        let mut loaded_from = self.loaded_from.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded_from.0 == cert_pem && loaded_from.1 == key_pem {
            return Ok(false);
        }
        let key = certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        *loaded_from = (cert_pem, key_pem);
        Ok(true)
    }

    /// Polls the files every `interval` until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded"),
                Ok(false) => {}
                // Typically a half-written rotation: keep serving the old pair, retry next tick.
                Err(err) => tracing::warn!(error = %err, "serving certificate not reloaded"),
            }
        }
    }

    /// A rustls server config that always presents the current pair.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(current.clone())
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source });
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8], cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.display().to_string() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::NoKey { path: key_path.display().to_string(), message: err.to_string() })?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}
