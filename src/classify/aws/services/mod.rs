//! Per-service operation tables: operation name + parameters → IAM permissions.
//!
//! The same tables serve the JSON protocol and the Query protocol (SQS speaks both), so each
//! service reads its parameters through [`Input`], whichever way they arrived.

mod dynamodb;
mod ec2;
mod iam;
mod kinesis;
mod kms;
mod logs;
mod secretsmanager;
mod sns;
mod sqs;
mod ssm;
mod sts;

use serde_json::Value;

use super::params::Params;
use super::unscoped::has_no_resource_level_permissions;
use super::{permission, unclassified, ClassifyError, Ctx, Permission};

/// The parameters of one request.
pub(crate) enum Input<'a> {
    /// A JSON-protocol body (always an object).
    Json(&'a serde_json::Map<String, Value>),
    /// Query-protocol parameters (URL query and form body together) and the request path.
    Query { params: &'a Params, path: &'a str },
}

impl Input<'_> {
    /// A top-level string parameter; present with another type is an error.
    pub fn string(&self, name: &str) -> Result<Option<&str>, ClassifyError> {
        match self {
            Input::Json(map) => match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(unclassified(format!("parameter {name} is not a string"))),
            },
            Input::Query { params, .. } => params.get(name),
        }
    }

    /// A required string parameter.
    pub fn required(&self, op: &str, name: &str) -> Result<&str, ClassifyError> {
        self.string(name)?.ok_or_else(|| unclassified(format!("{op} without {name}")))
    }

    /// A list of strings: a JSON array, or Query `NAME.1`, `NAME.2`, …
    pub fn strings(&self, name: &str) -> Result<Vec<&str>, ClassifyError> {
        match self {
            Input::Json(map) => match map.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items.iter().map(|v| v.as_str().ok_or_else(|| unclassified(format!("{name} holds a non-string")))).collect(),
                Some(_) => Err(unclassified(format!("parameter {name} is not a list"))),
            },
            Input::Query { params, .. } => params.list(name),
        }
    }

    /// The JSON body, for services whose resources sit in nested structures.
    pub fn json(&self) -> Option<&serde_json::Map<String, Value>> {
        match self {
            Input::Json(map) => Some(map),
            Input::Query { .. } => None,
        }
    }

    /// The request path (`/` for the JSON protocol; SQS Query requests may address the queue by it).
    pub fn path(&self) -> &str {
        match self {
            Input::Json(_) => "/",
            Input::Query { path, .. } => path,
        }
    }
}

/// Permissions for `op` of `service` (IAM prefix), or an unclassified error.
pub(crate) fn permissions(service: &str, op: &str, input: &Input, ctx: &Ctx) -> Result<Vec<Permission>, ClassifyError> {
    if !(1..=128).contains(&op.len()) || !op.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(unclassified(format!("{service} operation {op:?} is not a name")));
    }
    let found = match service {
        "dynamodb" => dynamodb::permissions(op, input, ctx)?,
        "sqs" => sqs::permissions(op, input, ctx)?,
        "kms" => kms::permissions(op, input, ctx)?,
        "secretsmanager" => secretsmanager::permissions(op, input, ctx)?,
        "logs" => logs::permissions(op, input, ctx)?,
        "kinesis" => kinesis::permissions(op, input, ctx)?,
        "ssm" => ssm::permissions(op, input, ctx)?,
        "sns" => sns::permissions(op, input, ctx)?,
        "sts" => sts::permissions(op, input, ctx)?,
        "iam" => iam::permissions(op, input, ctx)?,
        "ec2" => ec2::permissions(op, input, ctx)?,
        _ => None,
    };
    match found {
        Some(p) => Ok(p),
        None => {
            let action = format!("{service}:{op}");
            if has_no_resource_level_permissions(&action) {
                Ok(vec![permission(action, "*")])
            } else {
                Err(unclassified(format!("{service} operation {op} is not supported")))
            }
        }
    }
}

/// A single permission `SERVICE:ACTION` on `resource`, as the common `Some(vec![…])` result.
fn one(service: &str, action: &str, resource: String) -> Option<Vec<Permission>> {
    Some(vec![permission(format!("{service}:{action}"), resource)])
}
