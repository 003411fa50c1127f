//! Classification: a request (HTTP, AWS API call, SQL statement) → the minimal [`Scope`] it needs.
//!
//! Everything here is a pure function of its input; nothing depends on the rest of the broker.

pub mod aws;
pub mod http;
pub mod path;
pub mod postgres;

use serde::Serialize;

/// The minimal set of permissions one request needs: never a wildcard.
///
/// Most requests need exactly one permission; a few need more (S3 `CopyObject` reads the source and
/// writes the destination; a SQL join reads several tables). Policy is evaluated for each permission
/// and the request is allowed only if every one is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Scope {
    /// The service the request talks to: `http`, `s3`, `dynamodb`, `postgres`, …
    pub service: String,
    /// The AWS region (or other location) when the service has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// What the request does, at least one entry.
    pub permissions: Vec<Permission>,
}

/// One verb on one resource: `s3:GetObject` on `arn:aws:s3:::bucket-a/file.txt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Permission {
    pub action: String,
    pub resource: String,
}

impl Scope {
    /// A scope with a single permission.
    pub fn single(service: impl Into<String>, region: Option<String>, action: impl Into<String>, resource: impl Into<String>) -> Self {
        Scope { service: service.into(), region, permissions: vec![Permission { action: action.into(), resource: resource.into() }] }
    }

    /// A stable, human-readable key naming exactly what this scope grants (used in cache keys and audit).
    pub fn key(&self) -> String {
        let mut out = self.service.clone();
        if let Some(region) = &self.region {
            out.push('@');
            out.push_str(region);
        }
        for p in &self.permissions {
            out.push('|');
            out.push_str(&p.action);
            out.push(' ');
            out.push_str(&p.resource);
        }
        out
    }
}

/// Why a request could not be turned into a scope. Such a request is always denied, never forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ClassifyError {
    pub reason: String,
}

impl ClassifyError {
    pub fn new(reason: impl Into<String>) -> Self {
        ClassifyError { reason: reason.into() }
    }
}
