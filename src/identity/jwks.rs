//! JSON Web Key Sets: RSA and P-256 keys from a file or an https URL, cached and re-read when a
//! token names a key id the cache does not know (key rotation), at most once per interval.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::BodyExt;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

use crate::config::JwksSource;
use crate::upstream::{full, HttpClient};

/// A re-read for an unknown key id happens at most this often (a flood of forged kids must not
/// become a flood of JWKS fetches).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// While no key has ever loaded (the issuer was down at start), a read is retried this often, so
/// tokens are accepted soon after the issuer comes up.
const UNLOADED_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Keys are re-read after this long even when every kid is known.
const MAX_AGE: Duration = Duration::from_secs(3600);
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The signature algorithms accepted; everything else (`none`, `HS*`, `PS*`…) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rs256,
    Es256,
}

impl Algorithm {
    pub fn parse(alg: &str) -> Option<Algorithm> {
        match alg {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// One verification key.
#[derive(Debug)]
pub struct Key {
    kid: Option<String>,
    alg: Option<String>,
    material: KeyMaterial,
}

#[derive(Debug)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed SEC1 point (0x04 ‖ x ‖ y).
    P256(Vec<u8>),
}

impl Key {
    fn usable_for(&self, alg: Algorithm) -> bool {
        let kind_fits = matches!((&self.material, alg), (KeyMaterial::Rsa { .. }, Algorithm::Rs256) | (KeyMaterial::P256(_), Algorithm::Es256));
        kind_fits && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }

    /// Whether `sig` is this key's signature of `message` under `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        match (&self.material, alg) {
            (KeyMaterial::Rsa { n, e }, Algorithm::Rs256) => {
                RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig).is_ok()
            }
            (KeyMaterial::P256(point), Algorithm::Es256) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message, sig).is_ok(),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parse a JWKS document; keys of other types, curves or uses are skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let b64 = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok());
    let keys = raw
        .keys
        .into_iter()
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let material = match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => KeyMaterial::Rsa { n: b64(&k.n)?, e: b64(&k.e)? },
                ("EC", Some("P-256")) => {
                    let (x, y) = (b64(&k.x)?, b64(&k.y)?);
                    if x.len() != 32 || y.len() != 32 {
                        return None;
                    }
                    KeyMaterial::P256([&[4u8][..], &x, &y].concat())
                }
                _ => return None,
            };
            Some(Key { kid: k.kid, alg: k.alg, material })
        })
        .collect();
    Ok(keys)
}

struct Cached {
    keys: Vec<Arc<Key>>,
    loaded_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// Why the last read failed; cleared by a successful one.
    last_error: Option<String>,
}

/// The verification keys, cached.
pub struct Jwks {
    source: JwksSource,
    client: HttpClient,
    timeout: Duration,
    cache: RwLock<Cached>,
    /// One re-read at a time; the others wait for it and then look again.
    refresh: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// Load the keys once; a file that cannot be read or parsed stops start-up.
    pub async fn load(source: JwksSource, client: HttpClient, timeout: Duration) -> anyhow::Result<Jwks> {
        let jwks = Jwks {
            source,
            client,
            timeout,
            cache: RwLock::new(Cached { keys: Vec::new(), loaded_at: None, attempted_at: None, last_error: None }),
            refresh: Default::default(),
        };
        match (jwks.fetch().await, &jwks.source) {
            (Ok(keys), _) => jwks.store(keys),
            (Err(e), JwksSource::File(path)) => anyhow::bail!("identity.jwt.jwks_file {}: {e}", path.display()),
            // The issuer may come up after the broker; requests are refused until its keys load.
            (Err(e), JwksSource::Url(url)) => {
                tracing::warn!(%url, error = %e, "cannot load the JWKS yet; tokens are refused until it loads");
                jwks.cache.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(e);
            }
        }
        Ok(jwks)
    }

    /// Keys that may have signed a token with this `kid` and `alg`, re-reading the set when none
    /// is known (rate-limited) or the cache is old. An error when no key set has loaded yet.
    pub async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Arc<Key>>, String> {
        let (found, stale) = self.lookup(kid, alg);
        if !found.is_empty() && !stale {
            return Ok(found);
        }
        let _guard = self.refresh.lock().await;
        let (found_now, stale_now) = self.lookup(kid, alg);
        if (!found_now.is_empty() && !stale_now) || !self.may_refresh() {
            return self.found_or_unavailable(found_now);
        }
        self.cache.write().unwrap_or_else(|e| e.into_inner()).attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS re-read");
                self.store(keys);
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the JWKS failed; keeping the cached keys");
                self.cache.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(e);
            }
        }
        self.found_or_unavailable(self.lookup(kid, alg).0)
    }

    /// `found`, unless no key set has ever loaded: then why not, for the refusal.
    fn found_or_unavailable(&self, found: Vec<Arc<Key>>) -> Result<Vec<Arc<Key>>, String> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        if cache.loaded_at.is_some() {
            return Ok(found);
        }
        let why = cache.last_error.as_deref().unwrap_or("not read yet");
        Err(format!("the broker cannot load the trusted JWKS yet ({why}); try again shortly"))
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> (Vec<Arc<Key>>, bool) {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let found = cache.keys.iter().filter(|k| k.usable_for(alg) && (kid.is_none() || k.kid.as_deref() == kid)).cloned().collect();
        (found, cache.loaded_at.is_none_or(|t| t.elapsed() > MAX_AGE))
    }

    fn may_refresh(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let interval = if cache.loaded_at.is_none() { UNLOADED_RETRY_INTERVAL } else { MIN_REFRESH_INTERVAL };
        cache.attempted_at.is_none_or(|t| t.elapsed() >= interval)
    }

    fn store(&self, keys: Vec<Key>) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.keys = keys.into_iter().map(Arc::new).collect();
        cache.loaded_at = Some(Instant::now());
        cache.last_error = None;
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path).await.map_err(|e| format!("cannot read: {e}"))?,
            JwksSource::Url(url) => self.fetch_url(url).await?,
        };
        let keys = parse_jwks(&bytes)?;
        if keys.is_empty() {
            return Err("no RS256 or ES256 signing keys in the set".into());
        }
        Ok(keys)
    }

    async fn fetch_url(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        let req = http::Request::get(url.as_str()).header(http::header::ACCEPT, "application/json").body(full("")).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES);
        let bytes = tokio::time::timeout(self.timeout, body.collect()).await.map_err(|_| "timed out".to_string())?.map_err(|e| e.to_string())?;
        Ok(bytes.to_bytes().to_vec())
    }
}

/// An error and its causes ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
