//! Rotation through the broker: the provider rotates at its source, then the broker drops every
//! cached lease of that provider so no request is served the old value from memory.

use std::sync::Arc;

use super::cache::LeaseCache;
use super::{CredentialProvider, Lease, ProviderError};

/// `provider.rotate(secret_id)`, then remove the provider's leases from `cache`. Returns the
/// leases dropped (for the audit record). On a failed rotation nothing is dropped: the old value
/// is still the valid one.
///
/// A rotation that completes asynchronously at the source (a Secrets Manager rotation Lambda)
/// may still serve the old value to the next read; the provider's TTL bounds how long it stays.
pub async fn rotate_and_drop(provider: &dyn CredentialProvider, cache: &LeaseCache, secret_id: &str) -> Result<Vec<Arc<Lease>>, ProviderError> {
    provider.rotate(secret_id).await?;
    let name = provider.name().to_string();
    Ok(cache.remove_where(|lease| lease.provider == name))
}
