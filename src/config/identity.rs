//! `identity`: who the agent is. The sidecar's configured identity by default, or per connection
//! from a verified JWT (`Proxy-Authorization: Bearer …`) or an mTLS client certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::raw::RawIdentity;
use super::{ConfigProblem, IdentityConfig};

/// The agent id the broker records for its own actions when agents identify per connection.
const BROKER_AGENT_ID: &str = "credential-broker";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIdentity {
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The claim holding the agent id (default `sub`); a leading `/` makes it a JSON pointer.
    pub agent_id_claim: Option<String>,
    /// The claim holding the tenant; without it the static `identity.tenant` applies.
    pub tenant_claim: Option<String>,
    pub leeway_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtlsIdentity {
    /// CA bundle that client certificates must chain to.
    pub client_ca_file: Option<String>,
    /// The proxy listener's own certificate chain and key.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// When set, only SPIFFE IDs of this trust domain are accepted.
    pub trust_domain: Option<String>,
    /// The SPIFFE ID path segment (0-based) that names the tenant, e.g. 1 for `/ns/{tenant}/sa/…`.
    pub tenant_path_segment: Option<usize>,
}

/// How an agent proves who it is.
#[derive(Debug, Clone)]
pub enum IdentityMode {
    /// Every request is the configured sidecar identity (downward API).
    Sidecar,
    /// Each proxy connection or request presents a JWT.
    Jwt(JwtSettings),
    /// The proxy listener speaks TLS and requires a client certificate with a SPIFFE ID.
    Mtls(MtlsSettings),
}

#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(url::Url),
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
    pub agent_id_claim: String,
    pub tenant_claim: Option<String>,
    pub leeway: Duration,
}

#[derive(Debug, Clone)]
pub struct MtlsSettings {
    pub client_ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trust_domain: Option<String>,
    pub tenant_path_segment: Option<usize>,
}

struct Problems<'a>(&'a mut Vec<ConfigProblem>);

impl Problems<'_> {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem { path: path.into(), message: message.into() });
    }

    fn required(&mut self, path: &str, v: Option<String>) -> String {
        match v {
            Some(s) if !s.trim().is_empty() => s,
            _ => {
                self.add(path, "is required");
                String::new()
            }
        }
    }

    fn required_path(&mut self, path: &str, v: Option<String>, base: &Path) -> PathBuf {
        let v = self.required(path, v);
        if v.is_empty() {
            PathBuf::new()
        } else {
            base.join(v)
        }
    }
}

/// Validate `identity`, appending every problem to `problems`.
pub(super) fn validate(raw: RawIdentity, base: &Path, problems: &mut Vec<ConfigProblem>) -> IdentityConfig {
    let mut p = Problems(problems);
    let (has_jwt, has_mtls) = (raw.jwt.is_some(), raw.mtls.is_some());
    let mode = match raw.mode.as_deref() {
        None | Some("sidecar") => IdentityMode::Sidecar,
        Some("jwt") => IdentityMode::Jwt(jwt_settings(&mut p, raw.jwt, base)),
        Some("mtls") => IdentityMode::Mtls(mtls_settings(&mut p, raw.mtls, base)),
        Some(other) => {
            p.add("identity.mode", format!("{other:?} is not one of sidecar, jwt, mtls"));
            IdentityMode::Sidecar
        }
    };
    if !matches!(mode, IdentityMode::Jwt(_)) && has_jwt {
        p.add("identity.jwt", "only used with identity.mode: jwt");
    }
    if !matches!(mode, IdentityMode::Mtls(_)) && has_mtls {
        p.add("identity.mtls", "only used with identity.mode: mtls");
    }
    let tenant_from_connection = match &mode {
        IdentityMode::Sidecar => false,
        IdentityMode::Jwt(j) => j.tenant_claim.is_some(),
        IdentityMode::Mtls(m) => m.tenant_path_segment.is_some(),
    };
    let agent_id = match (&mode, raw.agent_id) {
        (IdentityMode::Sidecar, v) => p.required("identity.agent_id", v),
        (_, Some(v)) if !v.trim().is_empty() => v,
        _ => BROKER_AGENT_ID.to_string(),
    };
    let tenant = match raw.tenant {
        Some(t) if !t.trim().is_empty() => t,
        _ if tenant_from_connection => String::new(),
        _ => {
            let hint = if matches!(mode, IdentityMode::Sidecar) { "is required" } else { "is required unless the tenant comes from the token or certificate" };
            p.add("identity.tenant", hint);
            String::new()
        }
    };
    IdentityConfig { agent_id, tenant, labels: raw.labels, mode }
}

fn jwt_settings(p: &mut Problems, raw: Option<RawJwtIdentity>, base: &Path) -> JwtSettings {
    let raw = raw.unwrap_or_else(|| {
        p.add("identity.jwt", "is required with identity.mode: jwt");
        RawJwtIdentity {
            jwks_file: None,
            jwks_url: None,
            issuer: Some("-".into()),
            audience: Some("-".into()),
            agent_id_claim: None,
            tenant_claim: None,
            leeway_seconds: None,
        }
    });
    let jwks = match (raw.jwks_file, raw.jwks_url) {
        (Some(file), None) => JwksSource::File(base.join(file)),
        (None, Some(u)) => match url::Url::parse(&u) {
            Ok(url) if url.scheme() == "https" => JwksSource::Url(url),
            Ok(_) => {
                p.add("identity.jwt.jwks_url", "must be an https URL");
                JwksSource::File(PathBuf::new())
            }
            Err(e) => {
                p.add("identity.jwt.jwks_url", format!("not a URL: {e}"));
                JwksSource::File(PathBuf::new())
            }
        },
        _ => {
            p.add("identity.jwt", "set exactly one of jwks_file, jwks_url");
            JwksSource::File(PathBuf::new())
        }
    };
    let leeway = raw.leeway_seconds.unwrap_or(30);
    if leeway > 300 {
        p.add("identity.jwt.leeway_seconds", "must be at most 300");
    }
    JwtSettings {
        jwks,
        issuer: p.required("identity.jwt.issuer", raw.issuer),
        audience: p.required("identity.jwt.audience", raw.audience),
        agent_id_claim: raw.agent_id_claim.filter(|c| !c.is_empty()).unwrap_or_else(|| "sub".into()),
        tenant_claim: raw.tenant_claim.filter(|c| !c.is_empty()),
        leeway: Duration::from_secs(leeway),
    }
}

fn mtls_settings(p: &mut Problems, raw: Option<RawMtlsIdentity>, base: &Path) -> MtlsSettings {
    let raw = raw.unwrap_or_else(|| {
        p.add("identity.mtls", "is required with identity.mode: mtls");
        RawMtlsIdentity {
            client_ca_file: Some("-".into()),
            cert_file: Some("-".into()),
            key_file: Some("-".into()),
            trust_domain: None,
            tenant_path_segment: None,
        }
    });
    MtlsSettings {
        client_ca_file: p.required_path("identity.mtls.client_ca_file", raw.client_ca_file, base),
        cert_file: p.required_path("identity.mtls.cert_file", raw.cert_file, base),
        key_file: p.required_path("identity.mtls.key_file", raw.key_file, base),
        trust_domain: raw.trust_domain.filter(|t| !t.is_empty()),
        tenant_path_segment: raw.tenant_path_segment,
    }
}
