//! The broker API's bearer token: read once from a file, kept only as its SHA-256 digest, and
//! compared in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request to `/v1/*` is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer …` at all (401).
    Missing,
    /// A bearer token that is not the admin token (403).
    Wrong,
}

/// The admin token. Holds no copy of the token itself.
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    /// Read the token file; surrounding whitespace (a trailing newline) is not part of the token.
    pub fn load(path: &Path) -> anyhow::Result<AdminToken> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        let token = text.trim();
        anyhow::ensure!(token.len() >= 16, "{}: the admin token must be at least 16 characters", path.display());
        Ok(AdminToken::from_token(token))
    }

    pub fn from_token(token: &str) -> AdminToken {
        AdminToken { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Check an `Authorization` header value. Comparing digests makes the time independent of
    /// both the token's content and its length.
    pub fn check(&self, authorization: Option<&http::HeaderValue>) -> Result<(), Denied> {
        let value = authorization.and_then(|v| v.to_str().ok()).ok_or(Denied::Missing)?;
        let (scheme, presented) = value.trim().split_once(' ').ok_or(Denied::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Missing);
        }
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if bool::from(presented.ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = AdminToken::from_token("a-long-admin-token-123");
        assert_eq!(t.check(Some(&header("Bearer a-long-admin-token-123"))), Ok(()));
        assert_eq!(t.check(Some(&header("bearer a-long-admin-token-123"))), Ok(()));
        assert_eq!(t.check(Some(&header("Bearer a-long-admin-token-12"))), Err(Denied::Wrong));
        assert_eq!(t.check(Some(&header("Basic YWRtaW46eA=="))), Err(Denied::Missing));
        assert_eq!(t.check(None), Err(Denied::Missing));
        assert!(!format!("{t:?}").contains("a-long"));
    }
}
