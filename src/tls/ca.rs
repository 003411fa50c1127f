//! The per-pod CA: generated at start, its private key only ever in memory, name-constrained to
//! the hosts the broker intercepts. Leaves are ECDSA P-256 with a fresh key per host, short-lived
//! and cached; concurrent first connections to a host mint one leaf.
//!
//! The cache is bounded by entries (least recently used first out): a wildcard route lets an
//! agent name any number of hosts (`x1.s3.amazonaws.com`, `x2.…`), and an unbounded map grew the
//! broker by gigabytes under such a flood. An evicted host just gets a fresh leaf next time.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::OnceCell;

/// Leaves start a little in the past so a client whose clock is slightly behind accepts them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// Leaves kept when the config does not say (`tls.leaf_cache_max_entries`).
pub const DEFAULT_LEAF_CACHE_ENTRIES: usize = 1000;

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
    /// One cell per host: the first caller mints, concurrent callers wait for that same leaf.
    leaves: Mutex<LruCache<String, Arc<OnceCell<Leaf>>>>,
}

impl CertificateAuthority {
    /// A new CA whose certificates are only valid for names under `permitted` (RFC 5280 name
    /// constraints): if its key ever leaked it could not impersonate any other site. An entry
    /// that is an IP address permits exactly that address; with none of a family, the whole
    /// family is excluded, so the CA can never vouch for an IP address no route names.
    pub fn generate(permitted: &[String], leaf_ttl: Duration) -> Result<Self, CaError> {
        Self::generate_with_cache(permitted, leaf_ttl, DEFAULT_LEAF_CACHE_ENTRIES)
    }

    /// [`CertificateAuthority::generate`], keeping at most `leaf_cache_max_entries` leaves.
    pub fn generate_with_cache(permitted: &[String], leaf_ttl: Duration, leaf_cache_max_entries: usize) -> Result<Self, CaError> {
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
        params.name_constraints = Some(name_constraints(permitted));
        let cert = params.self_signed(&key)?;
        let capacity = NonZeroUsize::new(leaf_cache_max_entries).unwrap_or(NonZeroUsize::MIN);
        Ok(CertificateAuthority {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            leaf_ttl,
            leaves: Mutex::new(LruCache::new(capacity)),
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
        let host = canonical_host(host);
        let cell = {
            let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = leaves.get(&host).filter(|c| c.get().is_none_or(|l| SystemTime::now() < l.refresh_at)).cloned();
            match fresh {
                Some(cell) => cell,
                None => {
                    let cell = Arc::new(OnceCell::new());
                    leaves.put(host.clone(), cell.clone());
                    cell
                }
            }
        };
        let leaf = cell.get_or_try_init(|| async { self.mint_leaf(&host) }).await?;
        Ok(leaf.config.clone())
    }

    /// How many leaves the cache holds now (tests, metrics).
    pub fn cached_leaves(&self) -> usize {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner()).len()
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
        match host.parse::<IpAddr>() {
            // Clients match an IP literal against IP SANs only ("DNS:127.0.0.1" is refused). No
            // CN either: some verifiers check a CN that looks like a DNS name against the DNS
            // constraints, and an empty subject makes the SAN extension critical, as RFC 5280 asks.
            Ok(ip) => {
                params.subject_alt_names = vec![SanType::IpAddress(ip)];
                params.distinguished_name = DistinguishedName::new();
            }
            Err(_) => {
                params.subject_alt_names = vec![SanType::DnsName(host.try_into()?)];
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, host);
                params.distinguished_name = dn;
            }
        }
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

/// Lowercase names; IP literals in their one canonical form (`::1`, not `0:0::1`), so one
/// address is one cache entry and one SAN.
fn canonical_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// DNS subtrees for names, exact-address iPAddress subtrees for IP literals, and an exclusion of
/// every address of a family no route names (without one, an iPAddress SAN would be unconstrained).
fn name_constraints(permitted: &[String]) -> NameConstraints {
    let mut permitted_subtrees = Vec::new();
    let (mut v4, mut v6) = (false, false);
    for entry in permitted {
        match canonical_host(entry).parse::<IpAddr>() {
            Ok(ip) => {
                v4 |= ip.is_ipv4();
                v6 |= ip.is_ipv6();
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                permitted_subtrees.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix)));
            }
            Err(_) => permitted_subtrees.push(GeneralSubtree::DnsName(entry.clone())),
        }
    }
    if !permitted_subtrees.iter().any(|s| matches!(s, GeneralSubtree::DnsName(_))) {
        // With no name to intercept the CA must still not be a wildcard CA for DNS names.
        permitted_subtrees.push(GeneralSubtree::DnsName("invalid".into()));
    }
    let mut excluded_subtrees = Vec::new();
    if !v4 {
        excluded_subtrees.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(IpAddr::from([0u8; 4]), 0)));
    }
    if !v6 {
        excluded_subtrees.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(IpAddr::from([0u8; 16]), 0)));
    }
    NameConstraints { permitted_subtrees, excluded_subtrees }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep it positive in DER
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests;
