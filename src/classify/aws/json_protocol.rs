//! The AWS JSON protocol: `X-Amz-Target: PREFIX.Operation` names the operation, the JSON body
//! names the resource.

use super::params::Params;
use super::services::{self, Input};
use super::{strict_json, unclassified, AwsRequest, ClassifyError, Ctx, Permission};

/// `X-Amz-Target` prefixes → IAM service prefix.
const TARGET_PREFIXES: &[(&str, &str)] = &[
    ("DynamoDB_20120810", "dynamodb"),
    ("AmazonSQS", "sqs"),
    ("TrentService", "kms"),
    ("secretsmanager", "secretsmanager"),
    ("Logs_20140328", "logs"),
    ("Kinesis_20131202", "kinesis"),
    ("AmazonSSM", "ssm"),
];

pub(crate) fn classify(req: &AwsRequest, endpoint_service: &str, target: &str, ctx: &Ctx) -> Result<Vec<Permission>, ClassifyError> {
    let (prefix, op) = target.split_once('.').ok_or_else(|| unclassified(format!("X-Amz-Target {target:?} is not PREFIX.Operation")))?;
    let service = TARGET_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, s)| *s)
        .ok_or_else(|| unclassified(format!("X-Amz-Target prefix {prefix:?} is not supported")))?;
    // The host decides where the request goes and which service signs it; the target must agree.
    if service != endpoint_service {
        return Err(unclassified(format!("X-Amz-Target {target:?} sent to a {endpoint_service} endpoint")));
    }
    if *req.method != http::Method::POST || req.path != "/" {
        return Err(unclassified(format!("JSON-protocol {target} as {} {}", req.method, req.path)));
    }
    // An `Action=` in the URL could be read by a Query-protocol front end; refuse the mixture.
    if let Some(q) = req.query.filter(|q| !q.is_empty()) {
        if Params::parse(q.as_bytes()).contains("Action") {
            return Err(unclassified(format!("{target} with Action in the query string")));
        }
    }
    let body = match req.body {
        // SDKs always send at least `{}`; an empty body reads as no parameters.
        None | Some(b"") => serde_json::Value::Object(Default::default()),
        Some(bytes) => strict_json::parse(bytes).map_err(|e| unclassified(format!("{target}: body is not valid JSON: {e}")))?,
    };
    let map = body.as_object().ok_or_else(|| unclassified(format!("{target}: body is not a JSON object")))?;
    services::permissions(service, op, &Input::Json(map), ctx)
}
