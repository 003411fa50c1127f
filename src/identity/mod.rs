//! Agent identity: who is asking, per connection. The sidecar's configured identity by default;
//! with `identity.mode: jwt` or `mtls`, only what the connection proves, and never a fallback.

pub mod jwks;
pub mod jwt;
pub mod mtls;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, Extensions, HeaderMap};

use crate::config::{IdentityConfig, IdentityMode};
use crate::providers::Identity;
use crate::upstream::HttpClient;
use jwt::JwtVerifier;
use mtls::MtlsListener;

/// The identity a connection proved (a CONNECT's token, an mTLS certificate), carried to each of
/// its requests as a request extension.
#[derive(Debug, Clone)]
pub struct ConnectionIdentity(pub Arc<Identity>);

/// Why a request has no identity.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// Nothing was presented: 407 with a `Proxy-Authenticate: Bearer` challenge.
    #[error("{0}")]
    Missing(String),
    /// Something was presented and it does not hold: 403.
    #[error("{0}")]
    Invalid(String),
}

/// Resolves the identity of each connection or request, per `identity.mode`.
pub struct AgentIdentities {
    sidecar: Arc<Identity>,
    verifier: Verifier,
}

enum Verifier {
    Sidecar,
    Jwt(Box<JwtVerifier>),
    Mtls(MtlsListener),
}

impl AgentIdentities {
    pub async fn build(config: &IdentityConfig, client: &HttpClient, timeout: Duration) -> anyhow::Result<AgentIdentities> {
        let sidecar = Arc::new(Identity { agent_id: config.agent_id.clone(), tenant: config.tenant.clone(), labels: config.labels.clone() });
        let verifier = match &config.mode {
            IdentityMode::Sidecar => Verifier::Sidecar,
            IdentityMode::Jwt(settings) => {
                let jwks = jwks::Jwks::load(settings.jwks.clone(), client.clone(), timeout).await?;
                Verifier::Jwt(Box::new(JwtVerifier::new(settings.clone(), jwks)))
            }
            IdentityMode::Mtls(settings) => Verifier::Mtls(MtlsListener::new(settings.clone())?),
        };
        Ok(AgentIdentities { sidecar, verifier })
    }

    /// The TLS listener when agents identify by client certificate.
    pub fn mtls(&self) -> Option<&MtlsListener> {
        match &self.verifier {
            Verifier::Mtls(m) => Some(m),
            _ => None,
        }
    }

    /// The identity of a request: the one its connection proved, else its own
    /// `Proxy-Authorization` token (jwt mode), else the sidecar's (sidecar mode only).
    pub async fn for_request(&self, extensions: &Extensions, headers: &HeaderMap) -> Result<Arc<Identity>, IdentityError> {
        if let Some(ConnectionIdentity(identity)) = extensions.get::<ConnectionIdentity>() {
            return Ok(identity.clone());
        }
        match &self.verifier {
            Verifier::Sidecar => Ok(self.sidecar.clone()),
            // Each request is checked on its own: the token's expiry is not needed here.
            Verifier::Jwt(_) => self.for_token(bearer_token(headers)?).await.map(|(identity, _)| identity),
            Verifier::Mtls(_) => Err(IdentityError::Invalid("agents identify by client certificate: use the TLS proxy listener".into())),
        }
    }

    /// The sidecar's identity, when that is every connection's (`identity.mode: sidecar`).
    pub fn sidecar(&self) -> Option<Arc<Identity>> {
        matches!(self.verifier, Verifier::Sidecar).then(|| self.sidecar.clone())
    }

    /// Whether agents identify with a JWT (`identity.mode: jwt`).
    pub fn takes_tokens(&self) -> bool {
        matches!(self.verifier, Verifier::Jwt(_))
    }

    /// The identity a JWT proves, verified as a `Proxy-Authorization` bearer token is (the
    /// Postgres listener takes it as the password), with the last instant the token is accepted
    /// (`exp` plus the verifier's leeway; None when not representable). Reasons never quote the token.
    pub async fn for_token(&self, token: &str) -> Result<(Arc<Identity>, Option<SystemTime>), IdentityError> {
        let Verifier::Jwt(verifier) = &self.verifier else {
            return Err(IdentityError::Invalid("agents do not identify by token here (identity.mode is not jwt)".into()));
        };
        let agent = verifier.verify(token, SystemTime::now()).await.map_err(|reason| IdentityError::Invalid(format!("identity token rejected: {reason}")))?;
        Ok((Arc::new(self.agent(agent.agent_id, agent.tenant, "jwt")), agent.expires_at))
    }

    /// The identity an mTLS client certificate names.
    pub fn for_certificate(&self, agent: mtls::CertifiedAgent) -> Arc<Identity> {
        Arc::new(self.agent(agent.spiffe_id, agent.tenant, "mtls"))
    }

    /// A per-connection identity: the sidecar's labels (pod, namespace) plus how it was proven;
    /// the tenant is the connection's own when configured so, else the static one.
    fn agent(&self, agent_id: String, tenant: Option<String>, method: &str) -> Identity {
        let mut labels = self.sidecar.labels.clone();
        labels.insert("identity_method".into(), method.into());
        Identity { agent_id, tenant: tenant.unwrap_or_else(|| self.sidecar.tenant.clone()), labels }
    }
}

/// The token from `Proxy-Authorization: Bearer …`. Exactly one such header: with two, which one
/// names the agent would depend on who reads them, so neither does.
fn bearer_token(headers: &HeaderMap) -> Result<&str, IdentityError> {
    let mut values = headers.get_all(header::PROXY_AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(IdentityError::Missing("this proxy requires an agent identity token: send Proxy-Authorization: Bearer <JWT>".into()));
    };
    if values.next().is_some() {
        return Err(IdentityError::Invalid("send one Proxy-Authorization header, not several".into()));
    }
    let value = value.to_str().map_err(|_| IdentityError::Invalid("Proxy-Authorization is not valid text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(IdentityError::Invalid("Proxy-Authorization must use the Bearer scheme with a JWT".into())),
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    #[test]
    fn exactly_one_bearer_header_names_the_agent() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer_token(&headers), Err(IdentityError::Missing(_))));
        headers.append(header::PROXY_AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer_token(&headers).ok(), Some("a.b.c"));
        headers.append(header::PROXY_AUTHORIZATION, "Bearer x.y.z".parse().unwrap());
        assert!(matches!(bearer_token(&headers), Err(IdentityError::Invalid(m)) if m.contains("one Proxy-Authorization")));
    }
}
