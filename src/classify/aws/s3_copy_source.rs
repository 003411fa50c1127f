//! The `x-amz-copy-source` header of CopyObject / UploadPartCopy: the object that is read.

use super::endpoint::{is_account_id, is_bucket_name, is_region};
use super::params::{percent_decode, Params};
use super::s3::Base;
use super::{permission, unclassified, ClassifyError, Endpoint, Permission};

/// `s3:GetObject` (or `s3:GetObjectVersion` when a `versionId` is given) on the copy source.
///
/// Accepted forms (URL-encoded, as the SDKs send them): `bucket/key`, `/bucket/key`,
/// `arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME/object/KEY`, each optionally followed by
/// `?versionId=ID`.
pub(crate) fn read_permission(header: &str, ep: &Endpoint) -> Result<Permission, ClassifyError> {
    let bad = || unclassified(format!("x-amz-copy-source {header:?} is not bucket/key"));
    // The version id is split off before decoding: a `?` inside the key arrives as `%3F`.
    let (raw, query) = match header.split_once('?') {
        Some((raw, q)) => (raw, Some(q)),
        None => (header, None),
    };
    let versioned = match query {
        None => false,
        Some(q) => {
            let params = Params::parse(q.as_bytes());
            if params.names().any(|n| n != "versionId") {
                return Err(bad());
            }
            params.get("versionId")?.is_some()
        }
    };
    let decoded = percent_decode(raw)?;
    let partition = ep.partition.arn_name();
    let (base, key) = if let Some(rest) = decoded.strip_prefix("arn:") {
        access_point_source(rest, partition).ok_or_else(bad)?
    } else {
        let path = decoded.strip_prefix('/').unwrap_or(&decoded);
        let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
        if !is_bucket_name(bucket) {
            return Err(bad());
        }
        let base = Base::Bucket { partition: partition.to_string(), bucket: bucket.to_string() };
        (base, key.to_string())
    };
    if key.is_empty() {
        return Err(bad());
    }
    let action = if versioned { "s3:GetObjectVersion" } else { "s3:GetObject" };
    Ok(permission(action, base.object_arn(&key)))
}

/// `PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME/object/KEY` (after `arn:`), same partition only.
fn access_point_source(rest: &str, partition: &str) -> Option<(Base, String)> {
    let mut parts = rest.splitn(5, ':');
    let (p, service, region, account, resource) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if p != partition || service != "s3" || !is_region(region) || !is_account_id(account) {
        return None;
    }
    let (name, key) = resource.strip_prefix("accesspoint/")?.split_once("/object/")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    let base = Base::AccessPoint { partition: p.to_string(), region: region.to_string(), account: account.to_string(), name: name.to_string() };
    Some((base, key.to_string()))
}
