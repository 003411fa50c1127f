//! SNS (Query protocol): topics from `TopicArn`, `Name` (CreateTopic) or a subscription ARN.
//!
//! Publishing to a phone number (`PhoneNumber`) has no resource in IAM and would need `*`, which
//! also covers every topic: it is unclassified. `TargetArn` (mobile push endpoints) is accepted
//! as an SNS ARN.

use super::super::arn::{checked_name, parse};
use super::{one, unclassified, ClassifyError, Ctx, Input, Permission};

/// Operations on the topic in `TopicArn`, with the IAM action authorizing them.
const TOPIC_OPS: &[(&str, &str)] = &[
    ("Publish", "Publish"),
    ("PublishBatch", "Publish"),
    ("Subscribe", "Subscribe"),
    ("ConfirmSubscription", "ConfirmSubscription"),
    ("DeleteTopic", "DeleteTopic"),
    ("GetTopicAttributes", "GetTopicAttributes"),
    ("SetTopicAttributes", "SetTopicAttributes"),
    ("ListSubscriptionsByTopic", "ListSubscriptionsByTopic"),
    ("AddPermission", "AddPermission"),
    ("RemovePermission", "RemovePermission"),
    ("GetDataProtectionPolicy", "GetDataProtectionPolicy"),
    ("PutDataProtectionPolicy", "PutDataProtectionPolicy"),
];

/// Operations on a subscription, authorized on its topic.
const SUBSCRIPTION_OPS: &[&str] = &["Unsubscribe", "GetSubscriptionAttributes", "SetSubscriptionAttributes"];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if let Some((_, action)) = TOPIC_OPS.iter().find(|(name, _)| *name == op) {
        let arn = match (input.string("TopicArn")?, input.string("TargetArn")?) {
            (Some(topic), None) => ctx.checked_arn(topic, "sns", "", true)?,
            (None, Some(target)) if op == "Publish" => ctx.checked_arn(target, "sns", "", true)?,
            _ => return Err(unclassified(format!("SNS {op} needs exactly one of TopicArn, TargetArn (phone numbers are not scoped)"))),
        };
        if input.string("PhoneNumber")?.is_some() {
            return Err(unclassified(format!("SNS {op} with PhoneNumber")));
        }
        return Ok(one("sns", action, arn));
    }
    if SUBSCRIPTION_OPS.contains(&op) {
        let sub = input.required(op, "SubscriptionArn")?;
        let sub = ctx.checked_arn(sub, "sns", "", true)?;
        // `…:TOPIC:SUBSCRIPTION-ID` → `…:TOPIC`.
        let topic = sub
            .rsplit_once(':')
            .map(|(t, _)| t.to_string())
            .filter(|t| parse(t).is_some_and(|a| !a.resource.is_empty()))
            .ok_or_else(|| unclassified(format!("{sub:?} is not a subscription ARN")))?;
        return Ok(one("sns", op, topic));
    }
    match op {
        "CreateTopic" => {
            let name = input.required(op, "Name")?;
            let base = name.strip_suffix(".fifo").unwrap_or(name);
            checked_name(base, "SNS topic", "_-", 256)?;
            Ok(one("sns", op, ctx.arn("sns", name)))
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            let arn = ctx.checked_arn(input.required(op, "ResourceArn")?, "sns", "", true)?;
            Ok(one("sns", op, arn))
        }
        _ => Ok(None),
    }
}
