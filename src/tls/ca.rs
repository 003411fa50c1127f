//! The per-pod CA: generated at start, its private key only ever in memory, name-constrained to
//! the hosts the broker intercepts. Leaves are ECDSA P-256 with a fresh key per host, short-lived
//! and cached; concurrent first connections to a host mint one leaf.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::OnceCell;

/// Leaves start a little in the past so a client whose clock is slightly behind accepts them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("writing CA certificate to {path}: {reason}")]
    Write { path: String, reason: String },
}

struct Leaf {
    config: Arc<ServerConfig>,
    refresh_at: SystemTime,
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    leaf_ttl: Duration,
    leaves: Mutex<HashMap<String, Arc<OnceCell<Leaf>>>>,
}

impl CertificateAuthority {
    /// A new CA whose certificates are only valid for names under `permitted_dns` (RFC 5280 name
    /// constraints): if its key ever leaked it could not impersonate any other site.
    pub fn generate(permitted_dns: &[String], leaf_ttl: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "credential-broker per-pod CA");
        dn.push(DnType::OrganizationName, "credential-broker");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
        params.not_after = (now + Duration::from_secs(30 * 24 * 3600)).into();
        params.serial_number = Some(random_serial());
        let mut subtrees: Vec<GeneralSubtree> = permitted_dns.iter().map(|d| GeneralSubtree::DnsName(d.clone())).collect();
        if subtrees.is_empty() {
            // With nothing to intercept the CA must still not be a wildcard CA.
            subtrees.push(GeneralSubtree::DnsName("invalid".into()));
        }
        params.name_constraints = Some(NameConstraints { permitted_subtrees: subtrees, excluded_subtrees: vec![] });
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            leaf_ttl,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (PEM) agents must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Write the certificate (never the key) atomically, world-readable.
    pub fn write_cert(&self, path: &Path) -> Result<(), CaError> {
        let err = |e: std::io::Error| CaError::Write { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &self.cert_pem).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// A TLS server config presenting a leaf for `host`, minted on first use and cached until
    /// near its expiry.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        let cell = {
            let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
            let stale = leaves.get(&host).and_then(|c| c.get()).is_some_and(|l| SystemTime::now() >= l.refresh_at);
            if stale {
                leaves.remove(&host);
            }
            leaves.entry(host.clone()).or_default().clone()
        };
        let leaf = cell.get_or_try_init(|| async { self.mint_leaf(&host) }).await?;
        Ok(leaf.config.clone())
    }

    fn mint_leaf(&self, host: &str) -> Result<Leaf, CaError> {
        let (cert, key) = self.sign_leaf(host)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert, self.cert_der.clone()], key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Refresh well before expiry so no client is handed a leaf about to lapse.
        Ok(Leaf { config: Arc::new(config), refresh_at: SystemTime::now() + self.leaf_ttl / 2 })
    }

    /// A fresh key and a short-lived certificate for `host`, signed by this CA.
    fn sign_leaf(&self, host: &str) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(host.try_into()?)];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
        params.not_after = (now + self.leaf_ttl).into();
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.der().clone(), key))
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep it positive in DER
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leaf_per_host_shared_by_concurrent_callers() {
        let ca = Arc::new(CertificateAuthority::generate(&["example.test".into()], Duration::from_secs(3600)).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let ca = ca.clone();
            tasks.push(tokio::spawn(async move { ca.server_config("api.example.test").await.unwrap() }));
        }
        let first = tasks.remove(0).await.unwrap();
        for t in tasks {
            assert!(Arc::ptr_eq(&first, &t.await.unwrap()));
        }
        let other = ca.server_config("b.example.test").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    /// The name constraints are what make trusting this CA safe: a standard verifier (webpki, as
    /// rustls and most clients use) rejects any certificate it signs for a host outside them.
    #[test]
    fn certificates_outside_the_routed_names_do_not_verify() {
        let ca = CertificateAuthority::generate(&["example.test".into()], Duration::from_secs(3600)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        let verify = |host: &str| {
            let (leaf, _) = ca.sign_leaf(host).unwrap();
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            verifier.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
        };
        assert!(verify("api.example.test").is_ok());
        let err = verify("www.bank.test").unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
    }
}
