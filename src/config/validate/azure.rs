//! Validation of the Azure providers (`azure_key_vault`, `azure_access_token`) and the broker's
//! Azure identity, every problem with its key path.

use std::path::Path;
use std::time::Duration;

use super::{https_url, is_loopback, resolve_path, Problems};
use crate::config::raw::{RawAzureIdentity, RawAzureManagedIdentity, RawAzureWorkloadIdentity};
use crate::config::{AzureAccessTokenSettings, AzureIdentity, AzureKeyVaultSettings, AzureSecretGenerator};

/// The default Entra ID authority (public cloud).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The Instance Metadata Service; plain HTTP on a link-local address, as Azure serves it.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Key Vault DNS suffixes (public, China, US Government clouds).
const VAULT_SUFFIXES: &[&str] = &[".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net"];
const TIMEOUT: Duration = Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
pub(super) fn key_vault(
    p: &mut Problems,
    path: &str,
    base: &Path,
    vault_url: String,
    secret: String,
    version: Option<String>,
    ttl_seconds: Option<u64>,
    rotation_generator: Option<String>,
    identity: Option<RawAzureIdentity>,
) -> Option<AzureKeyVaultSettings> {
    let vault_url = https_url(p, &format!("{path}.vault_url"), &vault_url, true).and_then(|u| {
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        if !is_loopback(&u) && !VAULT_SUFFIXES.iter().any(|s| host.ends_with(s) && host.len() > s.len()) {
            p.add(format!("{path}.vault_url"), format!("{:?} is not a Key Vault URL like https://NAME.vault.azure.net", u.as_str()));
            return None;
        }
        if u.path() != "/" || u.query().is_some() {
            p.add(format!("{path}.vault_url"), "must be the vault's base URL, without a path or query");
            return None;
        }
        Some(u)
    });
    // Key Vault object names: 1-127 of 0-9, a-z, A-Z and `-`.
    if secret.is_empty() || secret.len() > 127 || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        p.add(format!("{path}.secret"), format!("{secret:?} is not a Key Vault secret name (1-127 letters, digits and dashes)"));
    }
    if let Some(v) = &version {
        if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.add(format!("{path}.version"), format!("{v:?} is not a Key Vault version (32 hex digits); omit it for the latest"));
        }
    }
    let ttl = Duration::from_secs(ttl_seconds.unwrap_or(300));
    if !(1..=43_200).contains(&ttl.as_secs()) {
        p.add(format!("{path}.ttl_seconds"), "must be between 1 and 43200");
    }
    let rotation_generator = rotation_generator.and_then(|g| match g.as_str() {
        "random_base64url_32" => Some(AzureSecretGenerator::RandomBase64Url32),
        other => {
            p.add(format!("{path}.rotation_generator"), format!("{other:?} is not one of random_base64url_32"));
            None
        }
    });
    if rotation_generator.is_some() && version.is_some() {
        p.add(format!("{path}.rotation_generator"), "rotation adds a new version, which a pinned `version` would never read");
    }
    let identity = azure_identity(p, path, base, identity);
    Some(AzureKeyVaultSettings { vault_url: vault_url?, secret, version, ttl, rotation_generator, identity: identity?, timeout: TIMEOUT })
}

pub(super) fn access_token(
    p: &mut Problems,
    path: &str,
    base: &Path,
    scope: Option<String>,
    resource: Option<String>,
    identity: Option<RawAzureIdentity>,
) -> Option<AzureAccessTokenSettings> {
    let scope = match (scope, resource) {
        (Some(scope), None) => {
            let resource = scope.strip_suffix("/.default").unwrap_or_default();
            if !is_resource(resource) {
                p.add(
                    format!("{path}.scope"),
                    format!("{scope:?} is not RESOURCE/.default (the client-credentials flow only grants a resource's app roles), e.g. https://management.azure.com/.default"),
                );
                None
            } else {
                Some(scope)
            }
        }
        (None, Some(resource)) => {
            let trimmed = resource.trim_end_matches('/');
            if !is_resource(trimmed) {
                p.add(format!("{path}.resource"), format!("{resource:?} is not a resource URI or application id, e.g. https://management.azure.com"));
                None
            } else {
                Some(format!("{trimmed}/.default"))
            }
        }
        (Some(_), Some(_)) => {
            p.add(format!("{path}.scope"), "set either scope or resource, not both");
            None
        }
        (None, None) => {
            p.add(format!("{path}.scope"), "is required (RESOURCE/.default), or set resource");
            None
        }
    };
    let identity = azure_identity(p, path, base, identity);
    Some(AzureAccessTokenSettings { scope: scope?, identity: identity?, timeout: TIMEOUT })
}

/// An absolute URI (`https://management.azure.com`, `api://app`) or an application id (GUID).
fn is_resource(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace) && (is_guid(s) || url::Url::parse(s).is_ok_and(|u| u.has_host() || u.scheme() == "api"))
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// No default identity: inside an AKS pod, IMDS answers with the node's identity, which is not
/// the broker's to use, so the config must say which identity is meant.
fn azure_identity(p: &mut Problems, path: &str, base: &Path, identity: Option<RawAzureIdentity>) -> Option<AzureIdentity> {
    let path = format!("{path}.identity");
    match identity {
        None => {
            p.add(path, "is required: workload_identity (AKS workload identity federation) or managed_identity (IMDS)");
            None
        }
        Some(RawAzureIdentity { workload_identity: Some(w), managed_identity: None }) => workload_identity(p, &format!("{path}.workload_identity"), base, w),
        Some(RawAzureIdentity { workload_identity: None, managed_identity: Some(m) }) => managed_identity(p, &format!("{path}.managed_identity"), m),
        Some(_) => {
            p.add(path, "set exactly one of workload_identity or managed_identity");
            None
        }
    }
}

fn workload_identity(p: &mut Problems, path: &str, base: &Path, w: RawAzureWorkloadIdentity) -> Option<AzureIdentity> {
    // A tenant GUID or verified domain; `common`/`organizations` cannot issue app-only tokens.
    let tenant_ok = is_guid(&w.tenant_id)
        || (w.tenant_id.contains('.') && w.tenant_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') && !w.tenant_id.starts_with('.'));
    if !tenant_ok {
        p.add(format!("{path}.tenant_id"), format!("{:?} is not a tenant id (GUID) or domain", w.tenant_id));
    }
    if !is_guid(&w.client_id) {
        p.add(format!("{path}.client_id"), format!("{:?} is not an application (client) id GUID", w.client_id));
    }
    if w.token_file.is_empty() {
        p.add(format!("{path}.token_file"), "is required (the projected service-account token, $AZURE_FEDERATED_TOKEN_FILE on AKS)");
    }
    let authority = w.authority_host.as_deref().unwrap_or(DEFAULT_AUTHORITY_HOST);
    // Cleartext only to loopback: a local token endpoint in tests.
    let authority_host = https_url(p, &format!("{path}.authority_host"), authority, true)?;
    (tenant_ok && is_guid(&w.client_id) && !w.token_file.is_empty()).then(|| AzureIdentity::WorkloadIdentity {
        authority_host,
        tenant_id: w.tenant_id,
        client_id: w.client_id,
        token_file: resolve_path(base, &w.token_file),
    })
}

fn managed_identity(p: &mut Problems, path: &str, m: RawAzureManagedIdentity) -> Option<AzureIdentity> {
    if let Some(id) = m.client_id.as_deref().filter(|id| !is_guid(id)) {
        p.add(format!("{path}.client_id"), format!("{id:?} is not a managed identity client id GUID"));
        return None;
    }
    let raw = m.endpoint.as_deref().unwrap_or(DEFAULT_IMDS_ENDPOINT);
    // IMDS is plain HTTP on 169.254.169.254; anything else must be https or loopback (tests).
    let link_local = url::Url::parse(raw).ok().filter(|u| u.scheme() == "http" && matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_link_local()));
    let endpoint = match link_local {
        Some(u) => u,
        None => https_url(p, &format!("{path}.endpoint"), raw, true)?,
    };
    Some(AzureIdentity::ManagedIdentity { endpoint, client_id: m.client_id })
}
