//! ARNs and names that arrive in request parameters, checked before they become a resource.
//!
//! A caller-supplied ARN is used as the resource only when it is well formed, in the endpoint's
//! partition (and region, for regional services), of the expected service and resource type, and
//! free of characters an IAM policy would read as a wildcard or variable.

use super::endpoint::is_account_id;
use super::{unclassified, ClassifyError, Ctx};

/// The six parts of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

pub(crate) fn parse(s: &str) -> Option<Arn<'_>> {
    let mut parts = s.strip_prefix("arn:")?.splitn(5, ':');
    Some(Arn { partition: parts.next()?, service: parts.next()?, region: parts.next()?, account: parts.next()?, resource: parts.next()? })
}

/// Characters that never belong in a resource the classifier emits from caller input.
fn has_policy_chars(s: &str) -> bool {
    s.chars().any(|c| matches!(c, '*' | '?' | '$') || c.is_whitespace() || c.is_control())
}

impl Ctx<'_> {
    /// Accept `value` as an ARN of `service` whose resource starts with `resource_prefix`, in this
    /// partition; for regional services (`regional`), in this region too. Cross-account is allowed:
    /// the account is part of the ARN and policy sees it.
    pub fn checked_arn(&self, value: &str, service: &str, resource_prefix: &str, regional: bool) -> Result<String, ClassifyError> {
        let bad = || unclassified(format!("{value:?} is not a {service} {resource_prefix}… ARN in {}/{}", self.partition, self.region));
        let arn = parse(value).ok_or_else(bad)?;
        let region_ok = if regional { arn.region == self.region } else { arn.region.is_empty() };
        let rest = arn.resource.strip_prefix(resource_prefix).ok_or_else(bad)?;
        if arn.partition != self.partition || arn.service != service || !region_ok || !is_account_id(arn.account) || rest.is_empty() || has_policy_chars(value)
        {
            return Err(bad());
        }
        Ok(value.to_string())
    }
}

/// Accept `value` as a resource name: 1..=`max` characters, ASCII alphanumerics plus `extra`.
pub(crate) fn checked_name<'v>(value: &'v str, what: &str, extra: &str, max: usize) -> Result<&'v str, ClassifyError> {
    let ok = !value.is_empty() && value.len() <= max && value.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok {
        Ok(value)
    } else {
        Err(unclassified(format!("{what} {value:?} is not a valid name")))
    }
}

/// IAM policies read `*` and `?` as wildcards and `${…}` as a variable; `${*}`, `${?}` and `${$}`
/// are the policy language's literal forms.
pub(crate) fn escape_policy_chars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' => out.push_str("${*}"),
            '?' => out.push_str("${?}"),
            '$' => out.push_str("${$}"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Ctx<'static> = Ctx { partition: "aws", region: "us-east-1", account: "111122223333" };

    #[test]
    fn accepts_a_matching_arn() {
        let arn = "arn:aws:sns:us-east-1:123456789012:topic-a";
        assert_eq!(CTX.checked_arn(arn, "sns", "", true).unwrap(), arn);
        let role = "arn:aws:iam::123456789012:role/app";
        assert_eq!(CTX.checked_arn(role, "iam", "role/", false).unwrap(), role);
    }

    #[test]
    fn refuses_other_partition_region_service_type_or_wildcards() {
        for (arn, service, prefix, regional) in [
            ("arn:aws-cn:sns:us-east-1:123456789012:t", "sns", "", true),
            ("arn:aws:sns:us-west-2:123456789012:t", "sns", "", true),
            ("arn:aws:sqs:us-east-1:123456789012:t", "sns", "", true),
            ("arn:aws:iam::123456789012:user/app", "iam", "role/", false),
            ("arn:aws:iam::123456789012:role/*", "iam", "role/", false),
            ("arn:aws:sns:us-east-1:*:t", "sns", "", true),
            ("arn:aws:sns:us-east-1:123456789012:t?", "sns", "", true),
            ("arn:aws:iam:us-east-1:123456789012:role/a", "iam", "role/", false),
            ("not-an-arn", "sns", "", true),
        ] {
            assert!(CTX.checked_arn(arn, service, prefix, regional).is_err(), "{arn}");
        }
    }
}
