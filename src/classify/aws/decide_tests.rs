//! The decision table: host × signed scope → the endpoint classified and re-signed for, or why not.

use super::test_support::custom_endpoints;
use super::{decide_endpoint, DecideError, SignedFor};

/// (host, signed service, signed region) → Ok((service, region, bucket)) or Err(a phrase of the reason).
type Row<'a> = (&'a str, &'a str, &'a str, Result<(&'a str, &'a str, Option<&'a str>), &'a str>);

#[test]
fn the_host_decides_and_the_signed_scope_must_agree_on_aws_hostnames() {
    let rows: &[Row] = &[
        // Agreeing.
        ("dynamodb.eu-west-1.amazonaws.com", "dynamodb", "eu-west-1", Ok(("dynamodb", "eu-west-1", None))),
        ("sqs.us-east-1.amazonaws.com", "sqs", "us-east-1", Ok(("sqs", "us-east-1", None))),
        ("iam.amazonaws.com", "iam", "us-east-1", Ok(("iam", "us-east-1", None))),
        ("sts.amazonaws.com", "sts", "us-east-1", Ok(("sts", "us-east-1", None))),
        ("monitoring.us-east-1.amazonaws.com", "monitoring", "us-east-1", Ok(("cloudwatch", "us-east-1", None))),
        ("vpce-0abc-1x.dynamodb.us-west-2.vpce.amazonaws.com", "dynamodb", "us-west-2", Ok(("dynamodb", "us-west-2", None))),
        ("dynamodb-fips.us-gov-west-1.amazonaws.com", "dynamodb", "us-gov-west-1", Ok(("dynamodb", "us-gov-west-1", None))),
        // S3 path-style and virtual-hosted.
        ("s3.us-west-2.amazonaws.com", "s3", "us-west-2", Ok(("s3", "us-west-2", None))),
        ("bkt.s3.us-west-2.amazonaws.com", "s3", "us-west-2", Ok(("s3", "us-west-2", Some("bkt")))),
        // The global S3 host serves buckets of every region of its partition.
        ("s3.amazonaws.com", "s3", "eu-west-1", Ok(("s3", "eu-west-1", None))),
        ("bkt.s3.amazonaws.com", "s3", "ap-south-1", Ok(("s3", "ap-south-1", Some("bkt")))),
        // Disagreeing service: signed for IAM, sent to S3 (or the other way round).
        ("s3.us-east-1.amazonaws.com", "iam", "us-east-1", Err("signed for service \"iam\" but sent to s3.us-east-1.amazonaws.com, a s3 endpoint")),
        ("bkt.s3.us-east-1.amazonaws.com", "dynamodb", "us-east-1", Err("signed for service \"dynamodb\"")),
        ("iam.amazonaws.com", "s3", "us-east-1", Err("a iam endpoint")),
        ("monitoring.us-east-1.amazonaws.com", "cloudwatch", "us-east-1", Err("cannot classify")),
        // Disagreeing region.
        (
            "dynamodb.eu-west-1.amazonaws.com",
            "dynamodb",
            "us-east-1",
            Err("signed for region \"us-east-1\" but sent to dynamodb.eu-west-1.amazonaws.com, which serves eu-west-1"),
        ),
        ("bkt.s3.us-west-2.amazonaws.com", "s3", "eu-west-1", Err("which serves us-west-2")),
        ("iam.amazonaws.com", "iam", "eu-west-1", Err("which serves us-east-1")),
        ("sts.amazonaws.com", "sts", "eu-west-1", Err("which serves us-east-1")),
        // The global S3 host does not cross partitions, nor take a non-region.
        ("s3.amazonaws.com", "s3", "cn-north-1", Err("which serves us-east-1")),
        ("s3.amazonaws.com", "s3", "us-east-1/../x", Err("which serves us-east-1")),
        // Unknown service names and hosts.
        ("execute-api.us-east-1.amazonaws.com", "execute-api", "us-east-1", Err("not a known AWS endpoint")),
        ("example.com", "s3", "us-east-1", Err("not a known AWS endpoint")),
    ];
    check(rows);
}

#[test]
fn a_custom_endpoint_decides_by_the_signed_scope_where_its_configuration_leaves_it_open() {
    let rows: &[Row] = &[
        // One host serving every service: the signature names service and region.
        ("127.0.0.1:4566", "dynamodb", "us-east-1", Ok(("dynamodb", "us-east-1", None))),
        ("127.0.0.1:4566", "sqs", "eu-west-1", Ok(("sqs", "eu-west-1", None))),
        ("127.0.0.1:4566", "sns", "us-east-1", Ok(("sns", "us-east-1", None))),
        ("127.0.0.1:4566", "logs", "us-east-1", Ok(("logs", "us-east-1", None))),
        ("127.0.0.1:4566", "s3", "us-east-1", Ok(("s3", "us-east-1", None))),
        ("127.0.0.1:4566", "monitoring", "us-east-1", Ok(("cloudwatch", "us-east-1", None))),
        // Virtual-hosted S3 on it; a bucket host is S3 only.
        ("bkt.127.0.0.1:4566", "s3", "us-east-1", Ok(("s3", "us-east-1", Some("bkt")))),
        ("bkt.127.0.0.1:4566", "dynamodb", "us-east-1", Err("names an S3 bucket")),
        // Another port is another host.
        ("127.0.0.1:4567", "s3", "us-east-1", Err("not a known AWS endpoint")),
        ("127.0.0.1:4566", "bedrock", "us-east-1", Err("cannot classify")),
        ("127.0.0.1:4566", "s3", "local", Err("not an AWS region")),
        // A fixed region must agree; the service stays open.
        ("gateway.internal", "kms", "eu-central-1", Ok(("kms", "eu-central-1", None))),
        ("gateway.internal:8443", "kms", "eu-central-1", Ok(("kms", "eu-central-1", None))),
        ("gateway.internal", "kms", "us-east-1", Err("configured for region eu-central-1")),
        // A fixed service must agree.
        ("127.0.0.1:5001", "dynamodb", "us-east-1", Ok(("dynamodb", "us-east-1", None))),
        ("127.0.0.1:5001", "sqs", "us-east-1", Err("configured as a dynamodb endpoint")),
        ("localhost", "s3", "eu-west-1", Ok(("s3", "eu-west-1", None))),
        ("bkt.localhost", "s3", "eu-west-1", Ok(("s3", "eu-west-1", Some("bkt")))),
        ("localhost", "s3", "us-east-1", Err("configured for region eu-west-1")),
    ];
    check(rows);
}

#[test]
fn only_a_contradiction_is_a_mismatch() {
    let custom = custom_endpoints();
    let signed = |service, region| SignedFor { service, region };
    assert!(matches!(decide_endpoint("s3.us-east-1.amazonaws.com", &custom, signed("iam", "us-east-1")), Err(DecideError::Mismatch(_))));
    assert!(matches!(decide_endpoint("nowhere.example", &custom, signed("s3", "us-east-1")), Err(DecideError::UnknownHost(_))));
    assert!(matches!(decide_endpoint("127.0.0.1:4566", &custom, signed("bedrock", "us-east-1")), Err(DecideError::UnknownService(_))));
}

fn check(rows: &[Row]) {
    let custom = custom_endpoints();
    let mut failures = Vec::new();
    for (host, service, region, want) in rows {
        let got = decide_endpoint(host, &custom, SignedFor { service, region });
        match (want, &got) {
            (Ok((s, r, b)), Ok(ep)) if ep.service == *s && ep.region == *r && ep.bucket.as_deref() == *b => {}
            (Err(phrase), Err(e)) if e.to_string().contains(phrase) => {}
            _ => failures.push(format!("{host} signed {service}/{region}: want {want:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
