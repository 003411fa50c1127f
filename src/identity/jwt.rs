//! JWT identity tokens (e.g. projected service-account tokens): RS256/ES256 signatures checked
//! against the JWKS, then issuer, audience, expiry and not-before. Reasons never quote the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::jwks::{Algorithm, Jwks};
use crate::config::JwtSettings;

/// Longest agent id or tenant taken from a token.
const MAX_CLAIM_LEN: usize = 256;

/// A token's verified claims that make the agent identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAgent {
    pub agent_id: String,
    /// None when the tenant is static (no `tenant_claim`).
    pub tenant: Option<String>,
    /// The last instant the token is accepted: its `exp` plus the configured leeway, the same
    /// bound [`check_claims`] applies (so a session ended then never outlives what a request
    /// would be allowed). None when that is beyond what the clock can represent.
    pub expires_at: Option<SystemTime>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    jwks: Jwks,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings, jwks: Jwks) -> JwtVerifier {
        JwtVerifier { settings, jwks }
    }

    /// Verify a compact JWS at `now`; the error says what is wrong, in words safe to return.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedAgent, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("malformed token: expected a signed JWT (header.payload.signature)".into());
        };
        let header: Header = decode_json(header_b64).map_err(|e| format!("malformed token header: {e}"))?;
        let alg = accepted_algorithm(&header.alg)?;
        if header.crit.is_some() {
            return Err("token header has critical extensions (crit), which are not supported".into());
        }
        let signature = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| "malformed token signature".to_string())?;
        let keys = self.jwks.candidates(header.kid.as_deref(), alg).await?;
        if keys.is_empty() {
            return Err("token is signed with a key that is not in the trusted JWKS".into());
        }
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        if !keys.iter().any(|k| k.verify(alg, signed, &signature)) {
            return Err("bad token signature".into());
        }
        let claims: Value = decode_json(payload_b64).map_err(|e| format!("malformed token claims: {e}"))?;
        let expires_at = check_claims(&self.settings, &claims, now)?;
        let agent_id = string_claim(&claims, &self.settings.agent_id_claim)?;
        let tenant = self.settings.tenant_claim.as_deref().map(|c| string_claim(&claims, c)).transpose()?;
        Ok(VerifiedAgent { agent_id, tenant, expires_at })
    }
}

fn accepted_algorithm(alg: &str) -> Result<Algorithm, String> {
    if let Some(a) = Algorithm::parse(alg) {
        return Ok(a);
    }
    Err(match alg {
        "none" | "None" | "NONE" => "unsigned tokens (alg none) are not accepted".to_string(),
        a if a.starts_with("HS") => format!("symmetric algorithm {a} is not accepted; tokens must be signed with RS256 or ES256"),
        a if a.len() <= 16 && a.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("algorithm {a} is not accepted; tokens must be signed with RS256 or ES256")
        }
        _ => "token algorithm is not accepted; tokens must be signed with RS256 or ES256".to_string(),
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, String> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url".to_string())?;
    serde_json::from_slice(&bytes).map_err(|_| "not a JSON object".to_string())
}

/// Issuer, audience, expiry (required) and not-before, with the configured leeway. Returns the
/// last instant the token is accepted (`exp` + leeway; None when not representable).
pub(super) fn check_claims(settings: &JwtSettings, claims: &Value, now: SystemTime) -> Result<Option<SystemTime>, String> {
    if !claims.is_object() {
        return Err("malformed token claims: not a JSON object".into());
    }
    if claims.get("iss").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err("wrong issuer: the token was not issued by the configured issuer".into());
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == settings.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(settings.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err("wrong audience: the token is not meant for this broker".into());
    }
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let leeway = settings.leeway.as_secs();
    let Some(exp) = claims.get("exp").and_then(Value::as_f64) else {
        return Err("token has no expiry (exp)".into());
    };
    if (now as f64) > exp + leeway as f64 {
        return Err("token expired".into());
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().ok_or_else(|| "malformed token claims: nbf is not a number".to_string())?;
        if nbf > (now + leeway) as f64 {
            return Err("token is not valid yet (nbf)".into());
        }
    }
    // Accepted above while `now` (whole seconds) <= exp + leeway: the token holds until then.
    let accepted_until = Duration::try_from_secs_f64(exp.max(0.0) + leeway as f64).ok().and_then(|d| UNIX_EPOCH.checked_add(d));
    Ok(accepted_until)
}

/// A string claim by name, or by JSON pointer when the name starts with `/`.
fn string_claim(claims: &Value, name: &str) -> Result<String, String> {
    let value = if name.starts_with('/') { claims.pointer(name) } else { claims.get(name) };
    match value.and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v.len() <= MAX_CLAIM_LEN && !v.chars().any(char::is_control) => Ok(v.to_string()),
        _ => Err(format!("token has no usable {name} claim (a non-empty string of at most {MAX_CLAIM_LEN} characters)")),
    }
}

#[cfg(test)]
mod tests;
