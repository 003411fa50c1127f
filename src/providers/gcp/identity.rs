//! The broker's own Google identity: an OAuth access token from the metadata server (Workload
//! Identity on GKE, the VM's service account on GCE) or, for development, from a service-account
//! key file through the JWT bearer grant (RFC 7523) signed RS256 with ring.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, Method, Request};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::api::{call, parse_json};
use crate::config::GcpIdentity;
use crate::providers::{ProviderError, Secret};
use crate::upstream::{full, HttpClient};

/// The scope the base token asks for; what it may do is the service account's IAM roles.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A base token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A source of the broker's base access token, cached until shortly before it expires.
pub struct GoogleAuth {
    source: Source,
    client: HttpClient,
    timeout: Duration,
    cached: tokio::sync::Mutex<Option<(Secret, SystemTime)>>,
}

enum Source {
    Metadata(url::Url),
    KeyFile(Box<ServiceAccountKey>),
}

/// The parts of a service-account key file the grant needs. The key is held by ring.
struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key: ring::signature::RsaKeyPair,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key_id: Option<String>,
    private_key: Zeroizing<String>,
    token_uri: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Zeroizing<String>,
    expires_in: Option<u64>,
}

impl GoogleAuth {
    /// Reads and checks a key file now (a broken one stops start-up); the metadata server is
    /// first asked on the first mint.
    pub fn new(identity: &GcpIdentity, client: HttpClient, timeout: Duration) -> anyhow::Result<GoogleAuth> {
        let source = match identity {
            GcpIdentity::Metadata { base_url } => Source::Metadata(base_url.clone()),
            GcpIdentity::KeyFile { path } => Source::KeyFile(Box::new(read_key_file(path)?)),
        };
        Ok(GoogleAuth { source, client, timeout, cached: tokio::sync::Mutex::new(None) })
    }

    /// The service account the key file names (None for the metadata server).
    pub fn key_file_account(&self) -> Option<&str> {
        match &self.source {
            Source::KeyFile(k) => Some(&k.client_email),
            Source::Metadata(_) => None,
        }
    }

    /// A base access token, fetched once and shared until a minute before it expires.
    pub async fn token(&self) -> Result<Secret, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if SystemTime::now() + REFRESH_MARGIN < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = match &self.source {
            Source::Metadata(base) => self.metadata_token(base).await?,
            Source::KeyFile(key) => self.key_file_token(key).await?,
        };
        *cached = Some((token.clone(), SystemTime::now() + lifetime));
        Ok(token)
    }

    async fn metadata_token(&self, base: &url::Url) -> Result<(Secret, Duration), ProviderError> {
        let url = format!("{}/computeMetadata/v1/instance/service-accounts/default/token", base.as_str().trim_end_matches('/'));
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header("metadata-flavor", "Google")
            .body(full(Vec::new()))
            .map_err(|e| ProviderError::permanent(format!("bad metadata request: {e}")))?;
        let body = call(&self.client, req, self.timeout, "the metadata server's token").await?;
        let answer: TokenAnswer = parse_json(&body, "the metadata server's token")?;
        token_with_lifetime(answer, "the metadata server")
    }

    async fn key_file_token(&self, key: &ServiceAccountKey) -> Result<(Secret, Duration), ProviderError> {
        let assertion = jwt_assertion(key, SystemTime::now())?;
        let form = Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                .append_pair("assertion", &assertion)
                .finish(),
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri(&key.token_uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(full(form.as_bytes().to_vec()))
            .map_err(|e| ProviderError::permanent(format!("bad token request: {e}")))?;
        let body = call(&self.client, req, self.timeout, "the service-account token grant").await?;
        let answer: TokenAnswer = parse_json(&body, "the service-account token grant")?;
        token_with_lifetime(answer, "the token endpoint")
    }
}

fn token_with_lifetime(answer: TokenAnswer, from: &str) -> Result<(Secret, Duration), ProviderError> {
    if answer.access_token.is_empty() {
        return Err(ProviderError::retryable(format!("{from} answered with an empty access_token")));
    }
    Ok((Secret::new(answer.access_token.as_str()), Duration::from_secs(answer.expires_in.unwrap_or(300))))
}

/// `header.claims.signature` for the JWT bearer grant: the key's account asks for a
/// cloud-platform token from the key's `token_uri`, valid for an hour (Google's maximum).
fn jwt_assertion(key: &ServiceAccountKey, now: SystemTime) -> Result<Zeroizing<String>, ProviderError> {
    let iat = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &key.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({"iss": key.client_email, "scope": CLOUD_PLATFORM, "aud": key.token_uri, "iat": iat, "exp": iat + 3600});
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0u8; key.key.public().modulus_len()];
    key.key
        .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| ProviderError::permanent("signing the service-account assertion failed"))?;
    Ok(Zeroizing::new(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))))
}

/// A service-account key file: JSON with `type: service_account` and a PKCS#8 RSA key. Refused
/// when group or others can read it, as for the oauth2 client secret.
fn read_key_file(path: &Path) -> anyhow::Result<ServiceAccountKey> {
    use rustls_pki_types::pem::PemObject as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("service-account key file {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        anyhow::ensure!(mode & 0o077 == 0, "service-account key file {shown} is accessible by group or others (mode {:o}); chmod 600", mode & 0o777);
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("service-account key file {shown}: {e}"))?);
    // serde's messages can quote input: report only where the JSON is wrong.
    let file: KeyFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("service-account key file {shown} is not a key file ({:?} error at line {})", e.classify(), e.line()))?;
    anyhow::ensure!(file.kind == "service_account", "service-account key file {shown} has type {:?}, not service_account", file.kind);
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(file.private_key.as_bytes())
        .map_err(|_| anyhow::anyhow!("service-account key file {shown}: private_key is not a PKCS#8 PEM key"))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| anyhow::anyhow!("service-account key file {shown}: private_key is not a usable RSA key ({e})"))?;
    let token_uri = file.token_uri.unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
    let uri = url::Url::parse(&token_uri).map_err(|e| anyhow::anyhow!("service-account key file {shown}: token_uri: {e}"))?;
    anyhow::ensure!(uri.scheme() == "https", "service-account key file {shown}: token_uri must be https");
    Ok(ServiceAccountKey { client_email: file.client_email, private_key_id: file.private_key_id, token_uri, key })
}

/// The metadata server: `$GCE_METADATA_HOST` when set (as Google's client libraries do), else
/// `metadata.google.internal`. Always plain HTTP, as the metadata server speaks nothing else.
pub fn default_metadata_url() -> url::Url {
    let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
    url::Url::parse(&format!("http://{host}")).unwrap_or_else(|_| url::Url::parse("http://metadata.google.internal").expect("static URL"))
}
