//! Kinesis Data Streams (`Kinesis_20131202.*`): the stream from `StreamName` or `StreamARN`.
//!
//! `GetRecords` carries only an opaque shard iterator unless the SDK adds `StreamARN`; without it
//! the request cannot be scoped and is unclassified.

use super::super::arn::checked_name;
use super::{one, unclassified, ClassifyError, Ctx, Input, Permission};

/// Operations on the stream named by `StreamName` / `StreamARN`.
const STREAM_OPS: &[&str] = &[
    "PutRecord",
    "PutRecords",
    "GetRecords",
    "GetShardIterator",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListShards",
    "CreateStream",
    "DeleteStream",
    "AddTagsToStream",
    "RemoveTagsFromStream",
    "ListTagsForStream",
    "IncreaseStreamRetentionPeriod",
    "DecreaseStreamRetentionPeriod",
    "MergeShards",
    "SplitShard",
    "UpdateShardCount",
    "StartStreamEncryption",
    "StopStreamEncryption",
    "EnableEnhancedMonitoring",
    "DisableEnhancedMonitoring",
    "RegisterStreamConsumer",
    "ListStreamConsumers",
];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if !STREAM_OPS.contains(&op) {
        return Ok(None);
    }
    let arn = match (input.string("StreamName")?, input.string("StreamARN")?) {
        (Some(name), None) => {
            let name = checked_name(name, "Kinesis stream", "_.-", 128)?;
            ctx.arn("kinesis", &format!("stream/{name}"))
        }
        (None, Some(arn)) => ctx.checked_arn(arn, "kinesis", "stream/", true)?,
        (Some(name), Some(arn)) => {
            // Both given: they must be the same stream.
            let by_name = ctx.arn("kinesis", &format!("stream/{name}"));
            let arn = ctx.checked_arn(arn, "kinesis", "stream/", true)?;
            if by_name != arn {
                return Err(unclassified(format!("Kinesis {op}: StreamName {name:?} and StreamARN {arn:?} differ")));
            }
            arn
        }
        (None, None) => return Err(unclassified(format!("Kinesis {op} without StreamName or StreamARN"))),
    };
    Ok(one("kinesis", op, arn))
}
