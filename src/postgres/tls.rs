//! TLS to the Postgres server, with libpq's `sslmode` meanings: `disable` (cleartext), `require`
//! (encrypted, certificate not checked) and `verify-full` (chain and host name checked). Used by
//! the listener's upstream connections and by the `postgres_native` admin connection.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{PostgresTls, SslMode};

/// The ALPN protocol name PostgreSQL 17+ expects when a client offers ALPN; older servers ignore it.
const ALPN: &[u8] = b"postgresql";

impl PostgresTls {
    /// Cleartext TCP.
    pub fn disabled() -> PostgresTls {
        PostgresTls { sslmode: SslMode::Disable, sslrootcert: None, client: None }
    }

    /// Settings for `sslmode`: with `verify-full`, the server is checked against `sslrootcert`
    /// alone when given, else against the web roots plus `upstream_ca` (`tls.upstream_ca_file`),
    /// as HTTPS upstreams are.
    pub fn new(sslmode: SslMode, sslrootcert: Option<PathBuf>, upstream_ca: Option<&Path>) -> anyhow::Result<PostgresTls> {
        let client = client_config(sslmode, sslrootcert.as_deref(), upstream_ca)?;
        Ok(PostgresTls { sslmode, sslrootcert, client })
    }
}

/// The rustls client settings for `sslmode` (None for `disable`).
pub fn client_config(sslmode: SslMode, sslrootcert: Option<&Path>, upstream_ca: Option<&Path>) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = match sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Require => rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        SslMode::VerifyFull => match sslrootcert {
            Some(path) => rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(read_roots(path)?)
                .with_no_client_auth(),
            None => crate::upstream::client_tls_config(upstream_ca)?,
        },
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Every certificate of a PEM bundle; an unreadable file, a bad PEM block or no certificate at
/// all is an error.
fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| anyhow::anyhow!("{} is not a PEM certificate bundle: {e}", path.display()))?;
        roots.add(cert).map_err(|e| anyhow::anyhow!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(roots)
}

/// `sslmode: require`: libpq's meaning is "encrypt, do not verify", so any certificate is
/// accepted — no chain, name or expiry check. That protects against a passive eavesdropper only;
/// an active man in the middle can present its own certificate (use `verify-full` against that).
/// The handshake signatures are still checked with the certificate's key: a server must hold the
/// private key of the certificate it presents, so the session keys are really shared with that
/// certificate's holder (and a broken handshake is not mistaken for an encrypted one).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether `host` names the loopback interface (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name the server's certificate must carry: a DNS name, or an IP address (matched against
/// the certificate's IP SANs).
pub fn server_name(host: &str) -> Result<ServerName<'static>, rustls_pki_types::InvalidDnsNameError> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// RFC 5929 `tls-server-end-point`: the hash of the server's certificate, with the hash of its
/// signature algorithm (SHA-256 for MD5 and SHA-1). None when the algorithm names no single hash
/// (RSA-PSS, Ed25519): then SCRAM goes without channel binding.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(sha2::Sha384::digest(cert).to_vec()),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(sha2::Sha512::digest(cert).to_vec()),
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.113549.1.1.11" | "1.2.840.10045.4.1" | "1.2.840.10045.4.3.2" => {
            Some(sha2::Sha256::digest(cert).to_vec())
        }
        _ => None,
    }
}

/// The connection to a Postgres server: cleartext TCP (`sslmode: disable`) or TLS over it.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// `tls-server-end-point` channel binding data, for a TLS connection.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        match self {
            UpstreamStream::Plain(_) => None,
            UpstreamStream::Tls(s) => s.get_ref().1.peer_certificates()?.first().and_then(|c| tls_server_end_point(c)),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamStream::Tls(_))
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// tokio-postgres' TLS hook over rustls, for the `postgres_native` admin connection
/// (`sslmode: require` or `verify-full`; tokio-postgres sends the `SSLRequest`).
#[derive(Clone)]
pub struct MakeRustlsConnect(pub Arc<rustls::ClientConfig>);

pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls_pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect { config: self.0.clone(), name: server_name(domain)? })
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match self.0.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| tls_server_end_point(c)) {
            Some(hash) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(hash),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().0.as_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["db.example.com", "10.0.0.5", "localhost.example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn ip_addresses_are_ip_server_names() {
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("db.internal").unwrap(), ServerName::DnsName(_)));
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(SslMode::VerifyFull, Some(&empty), None).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = client_config(SslMode::VerifyFull, Some(&missing), None).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        assert!(client_config(SslMode::Disable, None, None).unwrap().is_none());
        assert!(client_config(SslMode::Require, None, None).unwrap().is_some());
    }
}
