//! The explicit allowlist of IAM actions that support no resource-level permissions, and so are
//! the only ones the classifier scopes to resource `*`.
//!
//! Any other action without a resource is unclassified: `*` on an action that *does* support
//! resources would grant it on every resource.

/// Actions whose only IAM resource is `*`. Kept short on purpose; add entries only from the AWS
/// Service Authorization Reference ("Resource types" column empty).
const UNSCOPED: &[&str] = &[
    "s3:ListAllMyBuckets",
    "dynamodb:ListTables",
    "dynamodb:DescribeLimits",
    "dynamodb:DescribeEndpoints",
    "dynamodb:ListBackups",
    "dynamodb:ListGlobalTables",
    "sqs:ListQueues",
    "kinesis:ListStreams",
    "kinesis:DescribeLimits",
    "kms:ListKeys",
    "kms:ListAliases",
    "kms:CreateKey",
    "kms:GenerateRandom",
    "secretsmanager:ListSecrets",
    "secretsmanager:GetRandomPassword",
    "logs:DescribeLogGroups",
    "logs:DescribeQueries",
    "logs:GetQueryResults",
    "logs:DescribeResourcePolicies",
    "ssm:DescribeParameters",
    "sns:ListTopics",
    "sns:ListSubscriptions",
    "sts:GetCallerIdentity",
    "sts:GetSessionToken",
    "sts:GetAccessKeyInfo",
    "sts:DecodeAuthorizationMessage",
    "iam:ListRoles",
    "iam:ListUsers",
    "iam:ListGroups",
    "iam:ListPolicies",
    "iam:ListInstanceProfiles",
    "iam:GetAccountSummary",
    "iam:ListAccountAliases",
    "iam:GetAccountPasswordPolicy",
    "iam:ListOpenIDConnectProviders",
    "iam:ListSAMLProviders",
];

/// Whether `action` (`service:Action`, compared case-insensitively like IAM does) has no
/// resource-level permissions, so that `*` is its exact resource. EC2 `Describe*` actions are all
/// in this class.
pub fn has_no_resource_level_permissions(action: &str) -> bool {
    if let Some(op) = action.get(..4).filter(|p| p.eq_ignore_ascii_case("ec2:")).map(|_| &action[4..]) {
        // ASCII is checked first: slicing at byte 8 could otherwise split a character and panic.
        return op.bytes().all(|b| b.is_ascii_alphanumeric()) && op.len() > "Describe".len() && op[..8].eq_ignore_ascii_case("Describe");
    }
    UNSCOPED.iter().any(|a| a.eq_ignore_ascii_case(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_actions_and_ec2_describe_are_unscoped() {
        for a in ["dynamodb:ListTables", "sqs:listqueues", "ec2:DescribeInstances", "sts:GetCallerIdentity"] {
            assert!(has_no_resource_level_permissions(a), "{a}");
        }
    }

    #[test]
    fn everything_else_needs_a_resource() {
        for a in ["dynamodb:GetItem", "s3:GetObject", "ec2:RunInstances", "ec2:Describe", "ec2:Describe*", "ec2:Describ\u{e9}x", "ec2", "", "sqs:SendMessage"] {
            assert!(!has_no_resource_level_permissions(a), "{a}");
        }
    }
}
