//! mTLS on the proxy listener: the client certificate must chain to the configured CA bundle, and
//! its one SPIFFE ID (URI SAN) is the agent id.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

use crate::config::MtlsSettings;

/// Terminates TLS on the proxy port and names the agent behind each connection.
pub struct MtlsListener {
    acceptor: TlsAcceptor,
    /// The Postgres listener's: same certificate and client CA, ALPN `postgresql`, and a handshake
    /// without a client certificate completes, so the agent can be told why in a `FATAL`.
    postgres: TlsAcceptor,
    settings: MtlsSettings,
}

/// The agent a certificate names: its SPIFFE ID, and the tenant segment when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedAgent {
    pub spiffe_id: String,
    pub tenant: Option<String>,
    /// The certificate's `notAfter`: a database session on it ends then.
    pub not_after: std::time::SystemTime,
}

impl MtlsListener {
    pub fn new(settings: MtlsSettings) -> anyhow::Result<MtlsListener> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&settings.client_ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("identity.mtls.client_ca_file {}", settings.client_ca_file.display()))?;
        let (added, _) = roots.add_parsable_certificates(cas);
        anyhow::ensure!(added > 0, "identity.mtls.client_ca_file {}: no CA certificate in it", settings.client_ca_file.display());
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().context("building the client certificate verifier")?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        let chain = CertificateDer::pem_file_iter(&settings.cert_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("identity.mtls.cert_file {}", settings.cert_file.display()))?;
        let key = PrivateKeyDer::from_pem_file(&settings.key_file).with_context(|| format!("identity.mtls.key_file {}", settings.key_file.display()))?;
        let mut postgres = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(optional)
            .with_single_cert(chain.clone(), key.clone_key())
            .context("identity.mtls: the certificate and key do not form a usable pair")?;
        postgres.alpn_protocols = vec![b"postgresql".to_vec()];
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("identity.mtls: the certificate and key do not form a usable pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(MtlsListener { acceptor: TlsAcceptor::from(Arc::new(config)), postgres: TlsAcceptor::from(Arc::new(postgres)), settings })
    }

    /// Handshake (a verified client certificate is required) and read the agent from it.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Result<(TlsStream<TcpStream>, CertifiedAgent), String> {
        let tls = handshake(&self.acceptor, stream, timeout).await?;
        let agent = self.agent(&tls)?;
        Ok((tls, agent))
    }

    /// The Postgres listener's handshake, after `SSLRequest`: a certificate that is presented
    /// must verify (else the handshake fails), but a missing one is left for the caller to refuse
    /// inside TLS (the inner result), with a `FATAL` the agent can read.
    pub async fn accept_postgres<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        timeout: Duration,
    ) -> Result<(TlsStream<S>, Result<CertifiedAgent, String>), String> {
        let tls = handshake(&self.postgres, stream, timeout).await?;
        let agent = self.agent(&tls);
        Ok((tls, agent))
    }

    fn agent<S>(&self, tls: &TlsStream<S>) -> Result<CertifiedAgent, String> {
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no client certificate")?;
        certified_agent(leaf.as_ref(), &self.settings)
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(acceptor: &TlsAcceptor, stream: S, timeout: Duration) -> Result<TlsStream<S>, String> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// The SPIFFE ID of a (verified) leaf certificate; exactly one `spiffe://` URI SAN is required.
pub fn certified_agent(der: &[u8], settings: &MtlsSettings) -> Result<CertifiedAgent, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "client certificate cannot be parsed".to_string())?;
    let san = cert.subject_alternative_name().map_err(|_| "client certificate has a malformed subjectAltName".to_string())?;
    let uris: Vec<&str> =
        san.map(|s| s.value.general_names.iter().filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None }).collect()).unwrap_or_default();
    let spiffe: Vec<&str> = uris.into_iter().filter(|u| u.starts_with("spiffe://")).collect();
    let [id] = spiffe.as_slice() else {
        return Err(format!("client certificate must carry exactly one SPIFFE ID in its URI SAN (found {})", spiffe.len()));
    };
    let rest = &id["spiffe://".len()..];
    let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if trust_domain.is_empty() || id.len() > 2048 || id.contains(['?', '#']) {
        return Err("client certificate's SPIFFE ID is malformed".into());
    }
    if settings.trust_domain.as_deref().is_some_and(|td| !td.eq_ignore_ascii_case(trust_domain)) {
        return Err("client certificate's SPIFFE ID is not in the trusted trust domain".into());
    }
    let tenant = match settings.tenant_path_segment {
        None => None,
        Some(i) => match path.split('/').nth(i) {
            Some(t) if !t.is_empty() => Some(t.to_string()),
            _ => return Err(format!("client certificate's SPIFFE ID has no path segment {i} to name the tenant")),
        },
    };
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .ok()
        .and_then(|secs| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .unwrap_or(std::time::UNIX_EPOCH); // before 1970: long expired
    Ok(CertifiedAgent { spiffe_id: id.to_string(), tenant, not_after })
}
