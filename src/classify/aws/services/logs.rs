//! CloudWatch Logs (`Logs_20140328.*`): the log group from `logGroupName` (or the newer
//! `logGroupIdentifier`, a name or ARN), and the log stream where the action is authorized on it.

use super::super::arn::{checked_name, escape_policy_chars};
use super::{one, permission, ClassifyError, Ctx, Input, Permission};

/// Operations on the log group.
const GROUP_OPS: &[&str] = &[
    "CreateLogGroup",
    "DeleteLogGroup",
    "CreateLogStream",
    "DescribeLogStreams",
    "FilterLogEvents",
    "PutRetentionPolicy",
    "DeleteRetentionPolicy",
    "PutSubscriptionFilter",
    "DescribeSubscriptionFilters",
    "DeleteSubscriptionFilter",
    "PutMetricFilter",
    "DeleteMetricFilter",
    "TagLogGroup",
    "UntagLogGroup",
    "ListTagsLogGroup",
    "AssociateKmsKey",
    "DisassociateKmsKey",
];

/// Operations authorized on a log stream (`log-group:G:log-stream:S`).
const STREAM_OPS: &[&str] = &["PutLogEvents", "GetLogEvents", "DeleteLogStream"];

/// Log group and stream name characters besides ASCII alphanumerics.
const GROUP_CHARS: &str = "._-/#";

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if GROUP_OPS.contains(&op) {
        return Ok(one("logs", op, group_arn(op, input, ctx)?));
    }
    if STREAM_OPS.contains(&op) {
        let group = group_arn(op, input, ctx)?;
        // Lambda's streams look like `2024/01/31/[$LATEST]0123abcd`; `$` is escaped for IAM.
        let stream = checked_name(input.required(op, "logStreamName")?, "log stream", "._-/#[]$", 512)?;
        let stream = escape_policy_chars(stream);
        return Ok(one("logs", op, format!("{group}:log-stream:{stream}")));
    }
    match op {
        // Insights queries name several groups; each is authorized.
        "StartQuery" => {
            let mut out = Vec::new();
            if let Some(name) = input.string("logGroupName")? {
                out.push(group_from_name(name, ctx)?);
            }
            for name in input.strings("logGroupNames")? {
                out.push(group_from_name(name, ctx)?);
            }
            for id in input.strings("logGroupIdentifiers")? {
                out.push(group_from_identifier(id, ctx)?);
            }
            if out.is_empty() {
                return Ok(None);
            }
            Ok(Some(out.into_iter().map(|arn| permission("logs:StartQuery", arn)).collect()))
        }
        _ => Ok(None),
    }
}

fn group_arn(op: &str, input: &Input, ctx: &Ctx) -> Result<String, ClassifyError> {
    match (input.string("logGroupName")?, input.string("logGroupIdentifier")?) {
        (Some(name), None) => group_from_name(name, ctx),
        (None, Some(id)) => group_from_identifier(id, ctx),
        _ => Err(super::unclassified(format!("Logs {op} needs exactly one of logGroupName, logGroupIdentifier"))),
    }
}

fn group_from_name(name: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    let name = checked_name(name, "log group", GROUP_CHARS, 512)?;
    Ok(ctx.arn("logs", &format!("log-group:{name}")))
}

/// A log group name, or its ARN (with or without the `:*` that DescribeLogGroups returns).
fn group_from_identifier(id: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    if id.starts_with("arn:") {
        let id = id.strip_suffix(":*").unwrap_or(id);
        return ctx.checked_arn(id, "logs", "log-group:", true);
    }
    group_from_name(id, ctx)
}
