//! DynamoDB (`DynamoDB_20120810.*`): tables from `TableName`, batch and transaction item lists.

use serde_json::Value;

use super::super::arn::checked_name;
use super::{one, permission, unclassified, ClassifyError, Ctx, Input, Permission};

/// Operations whose resource is the table named by `TableName` (a name or a table ARN).
const TABLE_OPS: &[&str] = &[
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "DescribeTable",
    "CreateTable",
    "DeleteTable",
    "UpdateTable",
    "DescribeTimeToLive",
    "UpdateTimeToLive",
    "DescribeContinuousBackups",
    "UpdateContinuousBackups",
    "CreateBackup",
    "DescribeContributorInsights",
    "DescribeKinesisStreamingDestination",
    "DescribeTableReplicaAutoScaling",
];

/// Operations whose resource is a DynamoDB ARN in `ResourceArn`.
const RESOURCE_ARN_OPS: &[&str] = &["TagResource", "UntagResource", "ListTagsOfResource", "GetResourcePolicy", "PutResourcePolicy", "DeleteResourcePolicy"];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if TABLE_OPS.contains(&op) {
        let table = table_arn(input.required(op, "TableName")?, ctx)?;
        return Ok(one("dynamodb", op, table));
    }
    if op == "Query" || op == "Scan" {
        // Reading an index is authorized on the index ARN, not the table.
        let mut arn = table_arn(input.required(op, "TableName")?, ctx)?;
        if let Some(index) = input.string("IndexName")? {
            arn = format!("{arn}/index/{}", checked_name(index, "index", "_.-", 255)?);
        }
        return Ok(one("dynamodb", op, arn));
    }
    if RESOURCE_ARN_OPS.contains(&op) {
        let arn = input.required(op, "ResourceArn")?;
        return Ok(one("dynamodb", op, ctx.checked_arn(arn, "dynamodb", "table/", true)?));
    }
    let body = || input.json().ok_or_else(|| unclassified(format!("DynamoDB {op} outside the JSON protocol")));
    match op {
        "BatchGetItem" | "BatchWriteItem" => {
            let items = body()?.get("RequestItems").and_then(Value::as_object).ok_or_else(|| unclassified(format!("DynamoDB {op} without RequestItems")))?;
            let mut out = Vec::new();
            for table in items.keys() {
                out.push(permission(format!("dynamodb:{op}"), table_arn(table, ctx)?));
            }
            Ok(Some(out))
        }
        "TransactWriteItems" | "TransactGetItems" => Ok(Some(transact(op, body()?, ctx)?)),
        _ => Ok(None),
    }
}

/// Transactions are authorized per item, by the single-item action each one performs.
fn transact(op: &str, body: &serde_json::Map<String, Value>, ctx: &Ctx) -> Result<Vec<Permission>, ClassifyError> {
    let bad = |why: &str| unclassified(format!("DynamoDB {op}: {why}"));
    let items = body.get("TransactItems").and_then(Value::as_array).ok_or_else(|| bad("no TransactItems"))?;
    let mut out = Vec::new();
    for item in items {
        let item = item.as_object().ok_or_else(|| bad("item is not an object"))?;
        let [(kind, inner)] = item.iter().collect::<Vec<_>>()[..] else {
            return Err(bad("item must hold exactly one operation"));
        };
        let action = match (op, kind.as_str()) {
            ("TransactWriteItems", "Put") => "PutItem",
            ("TransactWriteItems", "Update") => "UpdateItem",
            ("TransactWriteItems", "Delete") => "DeleteItem",
            ("TransactWriteItems", "ConditionCheck") => "ConditionCheckItem",
            ("TransactGetItems", "Get") => "GetItem",
            _ => return Err(bad(&format!("unknown item operation {kind}"))),
        };
        let table = inner.get("TableName").and_then(Value::as_str).ok_or_else(|| bad("item without TableName"))?;
        out.push(permission(format!("dynamodb:{action}"), table_arn(table, ctx)?));
    }
    if out.is_empty() {
        return Err(bad("no items"));
    }
    Ok(out)
}

/// `arn:…:dynamodb:REGION:ACCOUNT:table/NAME`; `TableName` may also be the table's ARN.
fn table_arn(name: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    if name.starts_with("arn:") {
        let arn = ctx.checked_arn(name, "dynamodb", "table/", true)?;
        if arn.contains("/index/") || arn.contains("/stream/") || arn.contains("/backup/") {
            return Err(unclassified(format!("{name:?} is not a table ARN")));
        }
        return Ok(arn);
    }
    let name = checked_name(name, "DynamoDB table", "_.-", 255)?;
    Ok(ctx.arn("dynamodb", &format!("table/{name}")))
}
