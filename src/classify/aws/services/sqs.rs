//! SQS (JSON `AmazonSQS.*` and Query `Action=`): the queue from `QueueUrl`, whose path carries the
//! owning account (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, moto: `http://HOST/ACCOUNT/NAME`).

use super::super::arn::checked_name;
use super::super::endpoint::{is_account_id, resolve_endpoint};
use super::{one, unclassified, ClassifyError, Ctx, Input, Permission};

/// Operations on the queue in `QueueUrl`, with the IAM action that authorizes them: batch
/// operations are authorized by their single-message action.
const QUEUE_OPS: &[(&str, &str)] = &[
    ("SendMessage", "SendMessage"),
    ("SendMessageBatch", "SendMessage"),
    ("ReceiveMessage", "ReceiveMessage"),
    ("DeleteMessage", "DeleteMessage"),
    ("DeleteMessageBatch", "DeleteMessage"),
    ("ChangeMessageVisibility", "ChangeMessageVisibility"),
    ("ChangeMessageVisibilityBatch", "ChangeMessageVisibility"),
    ("GetQueueAttributes", "GetQueueAttributes"),
    ("SetQueueAttributes", "SetQueueAttributes"),
    ("PurgeQueue", "PurgeQueue"),
    ("DeleteQueue", "DeleteQueue"),
    ("ListQueueTags", "ListQueueTags"),
    ("TagQueue", "TagQueue"),
    ("UntagQueue", "UntagQueue"),
    ("ListDeadLetterSourceQueues", "ListDeadLetterSourceQueues"),
    ("AddPermission", "AddPermission"),
    ("RemovePermission", "RemovePermission"),
];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if let Some((_, action)) = QUEUE_OPS.iter().find(|(name, _)| *name == op) {
        return Ok(one("sqs", action, queue_arn(op, input, ctx)?));
    }
    match op {
        // Named by QueueName (+ owner account for GetQueueUrl); the queue lives in this region.
        "CreateQueue" | "GetQueueUrl" => {
            let name = queue_name(input.required(op, "QueueName")?)?;
            let account = match input.string("QueueOwnerAWSAccountId")? {
                Some(a) if op == "GetQueueUrl" && is_account_id(a) => a,
                Some(a) => return Err(unclassified(format!("queue owner {a:?} is not an account id"))),
                None => ctx.account,
            };
            let arn = format!("arn:{}:sqs:{}:{account}:{name}", ctx.partition, ctx.region);
            Ok(one("sqs", op, arn))
        }
        _ => Ok(None),
    }
}

/// The queue ARN from `QueueUrl` or, for Query requests posted to the queue URL, the path.
fn queue_arn(op: &str, input: &Input, ctx: &Ctx) -> Result<String, ClassifyError> {
    let from_param = input.string("QueueUrl")?.map(|u| from_url(u, ctx)).transpose()?;
    let from_path = match input.path() {
        "/" | "" => None,
        path => Some(from_path(path, ctx)?),
    };
    match (from_param, from_path) {
        (Some(a), Some(b)) if a != b => Err(unclassified(format!("SQS {op}: QueueUrl names {a} but the request path names {b}"))),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(unclassified(format!("SQS {op} without QueueUrl"))),
    }
}

fn from_url(queue_url: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    let url = url::Url::parse(queue_url).map_err(|_| unclassified(format!("QueueUrl {queue_url:?} is not a URL")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(unclassified(format!("QueueUrl {queue_url:?} has a query")));
    }
    // A queue URL of an AWS host in another region is not this endpoint's queue.
    let host = url.host_str().unwrap_or("");
    if let Some(ep) = resolve_endpoint(host, &[]) {
        if ep.service != "sqs" || ep.region != ctx.region {
            return Err(unclassified(format!("QueueUrl {queue_url:?} is not a queue in {}", ctx.region)));
        }
    }
    from_path(url.path(), ctx)
}

/// `/ACCOUNT/NAME` → `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`.
fn from_path(path: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    let bad = || unclassified(format!("SQS queue path {path:?} is not /ACCOUNT/NAME"));
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let (account, name) = rest.split_once('/').ok_or_else(bad)?;
    if !is_account_id(account) {
        return Err(bad());
    }
    let name = queue_name(name)?;
    Ok(format!("arn:{}:sqs:{}:{account}:{name}", ctx.partition, ctx.region))
}

/// 1–80 alphanumerics, `-` and `_`, optionally ending in `.fifo`.
fn queue_name(name: &str) -> Result<&str, ClassifyError> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    checked_name(base, "SQS queue", "-_", 80)?;
    Ok(name)
}
