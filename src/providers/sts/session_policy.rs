//! The inline session policy an AssumeRole call carries: exactly the scope's actions on exactly
//! its resources, nothing added. The effective permissions of the session are the intersection of
//! the role's policies and this one, so the role may be broad and each credential stays narrow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::classify::Scope;

/// The IAM session policy (compact JSON) for `scope`: one `Allow` statement per distinct set of
/// actions, listing exactly the resources that need that set. A resource that needs
/// `s3:GetObject` and another that needs `s3:PutObject` get two statements, never the cross
/// product. Actions and resources are copied verbatim (no wildcard is ever introduced), sorted
/// and deduplicated, so equal scopes give byte-identical policies (the cache key).
///
/// With `not_after`, every statement carries `"Condition":{"DateLessThan":{"aws:CurrentTime":…}}`
/// (RFC 3339, UTC, whole seconds rounded down): the way to make a session that STS issues for at
/// least 900 s stop working sooner.
///
/// A scope without permissions gives a policy with no statements; the provider refuses to mint for
/// it rather than send it (STS would treat an absent policy as "everything the role allows").
pub fn session_policy(scope: &Scope, not_after: Option<SystemTime>) -> String {
    // resource → the actions it needs
    let mut by_resource: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in &scope.permissions {
        by_resource.entry(p.resource.as_str()).or_default().insert(p.action.as_str());
    }
    // action set → the resources needing exactly that set
    let mut by_actions: BTreeMap<Vec<&str>, Vec<&str>> = BTreeMap::new();
    for (resource, actions) in by_resource {
        by_actions.entry(actions.into_iter().collect()).or_default().push(resource);
    }
    let condition = not_after.map(|t| Condition { date_less_than: CurrentTime { current_time: rfc3339_utc(t) } });
    let policy = Policy {
        version: "2012-10-17",
        statement: by_actions
            .into_iter()
            .map(|(actions, resources)| Statement {
                effect: "Allow",
                action: one_or_many(actions),
                resource: one_or_many(resources),
                condition: condition.clone(),
            })
            .collect(),
    };
    serde_json::to_string(&policy).expect("a policy of strings always serializes")
}

/// `2025-06-01T12:00:00Z`: RFC 3339 in UTC, whole seconds (rounded down, so never later than `t`).
pub fn rfc3339_utc(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .expect("a UTC time always formats")
}

// Field order is fixed by these structs (not by a map), so the JSON is the same whatever
// serde_json features other crates enable.
#[derive(Serialize)]
struct Policy<'a> {
    #[serde(rename = "Version")]
    version: &'static str,
    #[serde(rename = "Statement")]
    statement: Vec<Statement<'a>>,
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "Effect")]
    effect: &'static str,
    #[serde(rename = "Action")]
    action: OneOrMany<'a>,
    #[serde(rename = "Resource")]
    resource: OneOrMany<'a>,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
}

#[derive(Serialize, Clone)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    date_less_than: CurrentTime,
}

#[derive(Serialize, Clone)]
struct CurrentTime {
    #[serde(rename = "aws:CurrentTime")]
    current_time: String,
}

/// IAM's own convention: a single value is a string, several are an array.
#[derive(Serialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(&'a str),
    Many(Vec<&'a str>),
}

fn one_or_many(mut items: Vec<&str>) -> OneOrMany<'_> {
    if items.len() == 1 {
        OneOrMany::One(items.pop().expect("one item"))
    } else {
        OneOrMany::Many(items)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::Permission;

    fn scope(perms: &[(&str, &str)]) -> Scope {
        Scope {
            service: "s3".into(),
            region: Some("us-east-1".into()),
            permissions: perms.iter().map(|(a, r)| Permission { action: (*a).into(), resource: (*r).into() }).collect(),
        }
    }

    #[test]
    fn one_action_on_one_resource() {
        let s = scope(&[("s3:GetObject", "arn:aws:s3:::bucket-a/reports/q1.csv")]);
        assert_eq!(
            session_policy(&s, None),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-a/reports/q1.csv"}]}"#
        );
    }

    #[test]
    fn the_condition_bounds_the_session_to_not_after() {
        let s = scope(&[("s3:GetObject", "arn:aws:s3:::bucket-a/k")]);
        // 2025-06-01T12:00:00Z plus a fraction that must be rounded down, never up.
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_748_779_200_999);
        assert_eq!(
            session_policy(&s, Some(t)),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket-a/k","Condition":{"DateLessThan":{"aws:CurrentTime":"2025-06-01T12:00:00Z"}}}]}"#
        );
    }

    #[test]
    fn different_actions_on_different_resources_are_not_cross_multiplied() {
        // CopyObject: read the source, write the destination. Given in "wrong" order on purpose.
        let s = scope(&[("s3:PutObject", "arn:aws:s3:::dst/b"), ("s3:GetObject", "arn:aws:s3:::src/a")]);
        assert_eq!(
            session_policy(&s, None),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::src/a"},"#,
                r#"{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::dst/b"}]}"#
            )
        );
    }

    #[test]
    fn resources_with_the_same_action_set_share_a_statement_and_duplicates_collapse() {
        let s = scope(&[
            ("s3:DeleteObject", "arn:aws:s3:::b/y"),
            ("s3:DeleteObject", "arn:aws:s3:::b/x"),
            ("s3:DeleteObject", "arn:aws:s3:::b/x"),
            ("s3:GetObject", "arn:aws:s3:::b/z"),
            ("s3:PutObject", "arn:aws:s3:::b/z"),
        ]);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_779_200);
        assert_eq!(
            session_policy(&s, Some(t)),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Effect":"Allow","Action":"s3:DeleteObject","Resource":["arn:aws:s3:::b/x","arn:aws:s3:::b/y"],"#,
                r#""Condition":{"DateLessThan":{"aws:CurrentTime":"2025-06-01T12:00:00Z"}}},"#,
                r#"{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::b/z","#,
                r#""Condition":{"DateLessThan":{"aws:CurrentTime":"2025-06-01T12:00:00Z"}}}]}"#
            )
        );
    }

    #[test]
    fn output_does_not_depend_on_permission_order() {
        let a = scope(&[("dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/t"), ("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q")]);
        let mut b = a.clone();
        b.permissions.reverse();
        assert_eq!(session_policy(&a, None), session_policy(&b, None));
    }

    #[test]
    fn resources_are_copied_verbatim() {
        // The classifier writes a key's `*`, `?` and `$` as IAM's literal escapes (`${*}` …,
        // classify::aws::arn); the policy keeps them as they are, JSON-escaping only quotes.
        let s = scope(&[("s3:GetObject", "arn:aws:s3:::b/a\"${*}${?}.txt")]);
        assert_eq!(
            session_policy(&s, None),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/a\"${*}${?}.txt"}]}"#
        );
    }

    #[test]
    fn an_empty_scope_has_no_statements() {
        assert_eq!(session_policy(&scope(&[]), None), r#"{"Version":"2012-10-17","Statement":[]}"#);
    }
}
