//! Header injection: `Authorization: Bearer <minted>` replacing the agent's placeholder.

use http::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use crate::config::HeaderInject;
use crate::providers::Secret;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// The agent sent a value that is not the placeholder: possibly a real credential it should
    /// not have. It is refused rather than overwritten so the leak is noticed.
    #[error("header {0} carries a value that is not the configured placeholder; agents must not hold real credentials")]
    NotPlaceholder(String),
    #[error("header {0} is sent more than once")]
    Repeated(String),
}

/// Check the agent's header: absent, or exactly the placeholder (bare or in the route's format).
pub fn check_placeholder(headers: &HeaderMap, inject: &HeaderInject) -> Result<(), PlaceholderError> {
    let mut values = headers.get_all(&inject.name).iter();
    let Some(value) = values.next() else { return Ok(()) };
    if values.next().is_some() {
        return Err(PlaceholderError::Repeated(inject.name.to_string()));
    }
    let formatted = inject.format.replace("{secret}", &inject.placeholder);
    match value.to_str() {
        Ok(v) if v == inject.placeholder || v == formatted => Ok(()),
        _ => Err(PlaceholderError::NotPlaceholder(inject.name.to_string())),
    }
}

/// Replace the header with the minted secret in the route's format, marked sensitive so hyper
/// and HPACK never index or print it.
pub fn inject(headers: &mut HeaderMap, inject: &HeaderInject, secret: &Secret) -> Result<(), InvalidSecret> {
    let value = Zeroizing::new(inject.format.replace("{secret}", secret.expose()));
    let mut header = HeaderValue::from_str(&value).map_err(|_| InvalidSecret)?;
    header.set_sensitive(true);
    headers.insert(inject.name.clone(), header);
    Ok(())
}

/// The minted secret contains bytes that cannot go in a header.
#[derive(Debug, thiserror::Error)]
#[error("the minted credential cannot be sent as a header value")]
pub struct InvalidSecret;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HeaderInject {
        HeaderInject { name: http::header::AUTHORIZATION, format: "Bearer {secret}".into(), placeholder: "credential-broker-placeholder".into() }
    }

    #[test]
    fn placeholder_or_nothing_is_accepted_anything_else_is_refused() {
        let mut h = HeaderMap::new();
        assert!(check_placeholder(&h, &cfg()).is_ok());
        h.insert("authorization", "Bearer credential-broker-placeholder".parse().unwrap());
        assert!(check_placeholder(&h, &cfg()).is_ok());
        h.insert("authorization", "Bearer ghp_realtoken123".parse().unwrap());
        assert_eq!(check_placeholder(&h, &cfg()), Err(PlaceholderError::NotPlaceholder("authorization".into())));
    }

    #[test]
    fn injected_value_replaces_the_placeholder_and_is_sensitive() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer credential-broker-placeholder".parse().unwrap());
        inject(&mut h, &cfg(), &Secret::new("minted-1")).unwrap();
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert_eq!(h["authorization"], "Bearer minted-1");
        assert!(h["authorization"].is_sensitive());
    }
}
