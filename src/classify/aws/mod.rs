//! AWS API requests → IAM action + resource ARN.
//!
//! [`resolve_endpoint`] turns the host into a service, region and partition ([`decide_endpoint`]
//! also weighs the scope the request is signed for); [`classify`] reads the
//! request in the protocol that service speaks (S3 REST, JSON with `X-Amz-Target`, or the Query
//! protocol's `Action=`) and names every IAM permission the request needs, each on one concrete
//! resource. Anything not understood is an error, never a broad guess: the broker denies it.
//!
//! Resources are written as they would appear in an IAM policy. Two consequences:
//! - S3 object keys may contain `*`, `?` and `$`, which IAM treats as wildcards / variables; they
//!   are written as the policy escapes `${*}`, `${?}`, `${$}` so a session policy built from the
//!   scope matches only that key (this needs policy `Version` `2012-10-17`).
//! - Secrets Manager secret names become `secret:NAME-??????`: AWS appends six random characters
//!   to every secret ARN, and this is the form AWS documents for naming one secret by name.
//!
//! All functions here are pure: no I/O, no clock, no configuration beyond their arguments.

mod arn;
mod decide;
mod endpoint;
mod json_protocol;
mod params;
mod query_protocol;
mod s3;
mod s3_copy_source;
mod s3_multi_delete;
mod services;
mod strict_json;
mod unscoped;
mod vending;

#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod endpoint_tests;
#[cfg(test)]
mod json_tests;
#[cfg(test)]
mod query_tests;
#[cfg(test)]
mod s3_tests;
#[cfg(test)]
mod test_support;

pub use decide::{decide_endpoint, iam_prefix, is_iam_prefix, DecideError, SignedFor};
pub(crate) use endpoint::is_region;
pub use endpoint::{resolve_endpoint, AccessPoint, CustomEndpoint, Endpoint, Partition};
pub use unscoped::has_no_resource_level_permissions;
pub use vending::is_credential_vending;

use super::{ClassifyError, Permission, Scope};

/// One AWS API request, as the classifier needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct AwsRequest<'a> {
    pub method: &'a http::Method,
    /// The raw, still percent-encoded path (`/bucket/my%20key`).
    pub path: &'a str,
    /// The raw query string without the `?`.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The buffered body, when the protocol carries the resource in it: JSON protocol, Query
    /// protocol form bodies, and S3 `DeleteObjects` (`POST ?delete`, at most 1000 keys). `None`
    /// for S3 object uploads, which are streamed.
    pub body: Option<&'a [u8]>,
}

/// Name the permissions `req`, sent to `endpoint`, needs. `account_id` is the account of the route
/// (used for resources named without an ARN; ARNs and SQS queue URLs carry their own account).
///
/// Returns `Scope { service: endpoint.service, region: Some(endpoint.region), permissions }` with
/// duplicates removed. Credential-vending actions are classified like any other; see
/// [`is_credential_vending`] for the deny-by-default list the broker applies afterwards.
pub fn classify(req: &AwsRequest, endpoint: &Endpoint, account_id: &str) -> Result<Scope, ClassifyError> {
    if !endpoint::is_account_id(account_id) {
        return Err(ClassifyError::new(format!("configured AWS account id {account_id:?} is not 12 digits")));
    }
    let ctx = Ctx { partition: endpoint.partition.arn_name(), region: &endpoint.region, account: account_id };
    let target = header(req.headers, "x-amz-target")?;
    let permissions = match (endpoint.service.as_str(), target) {
        ("s3", None) => s3::classify(req, endpoint)?,
        (_, Some(target)) => json_protocol::classify(req, &endpoint.service, target, &ctx)?,
        ("sqs" | "sns" | "sts" | "iam" | "ec2", None) => query_protocol::classify(req, &endpoint.service, &ctx)?,
        (service, None) => return Err(unclassified(format!("{} {} to service {service} without X-Amz-Target", req.method, req.path))),
    };
    let mut unique: Vec<Permission> = Vec::with_capacity(permissions.len());
    for p in permissions {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    if unique.is_empty() {
        return Err(unclassified(format!("{} {} names no resource", req.method, req.path)));
    }
    Ok(Scope { service: endpoint.service.clone(), region: Some(endpoint.region.clone()), permissions: unique })
}

/// Where resources named without an ARN live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// ARN partition: `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
}

impl Ctx<'_> {
    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` in this context.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!("arn:{}:{service}:{}:{}:{resource}", self.partition, self.region, self.account)
    }

    /// `arn:PARTITION:SERVICE::ACCOUNT:RESOURCE`, for global services (IAM, STS).
    pub fn global_arn(&self, service: &str, resource: &str) -> String {
        format!("arn:{}:{service}::{}:{resource}", self.partition, self.account)
    }
}

/// The error every classifier returns for a request it does not understand.
pub(crate) fn unclassified(what: impl std::fmt::Display) -> ClassifyError {
    ClassifyError::new(format!("unclassified AWS request: {what}"))
}

pub(crate) fn permission(action: impl Into<String>, resource: impl Into<String>) -> Permission {
    Permission { action: action.into(), resource: resource.into() }
}

/// A header as UTF-8; a header sent twice is ambiguous (which one would AWS read?) and refused.
pub(crate) fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<Option<&'h str>, ClassifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unclassified(format!("header {name} sent more than once")));
    }
    first.to_str().map(|v| Some(v.trim())).map_err(|_| unclassified(format!("header {name} is not visible ASCII")))
}
