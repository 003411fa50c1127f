//! Endpoint resolution, one row per host shape.

use super::test_support::custom_endpoints;
use super::{resolve_endpoint, Partition};

/// (host, service, region, partition, bucket, access point "name@account", fips, dualstack)
type Expected<'a> = (&'a str, &'a str, Partition, Option<&'a str>, Option<&'a str>, bool, bool);

#[test]
fn aws_hosts_resolve() {
    use Partition::*;
    let rows: &[(&str, Expected)] = &[
        // Regional.
        ("s3.us-west-2.amazonaws.com", ("s3", "us-west-2", Aws, None, None, false, false)),
        ("dynamodb.eu-west-1.amazonaws.com", ("dynamodb", "eu-west-1", Aws, None, None, false, false)),
        ("sqs.us-east-1.amazonaws.com", ("sqs", "us-east-1", Aws, None, None, false, false)),
        ("kms.ap-southeast-2.amazonaws.com", ("kms", "ap-southeast-2", Aws, None, None, false, false)),
        ("secretsmanager.il-central-1.amazonaws.com", ("secretsmanager", "il-central-1", Aws, None, None, false, false)),
        ("logs.us-east-2.amazonaws.com", ("logs", "us-east-2", Aws, None, None, false, false)),
        ("monitoring.us-east-1.amazonaws.com", ("cloudwatch", "us-east-1", Aws, None, None, false, false)),
        ("api.ecr.eu-central-1.amazonaws.com", ("ecr", "eu-central-1", Aws, None, None, false, false)),
        ("sts.us-west-2.amazonaws.com", ("sts", "us-west-2", Aws, None, None, false, false)),
        // Global.
        ("iam.amazonaws.com", ("iam", "us-east-1", Aws, None, None, false, false)),
        ("sts.amazonaws.com", ("sts", "us-east-1", Aws, None, None, false, false)),
        ("s3.amazonaws.com", ("s3", "us-east-1", Aws, None, None, false, false)),
        ("iam-fips.amazonaws.com", ("iam", "us-east-1", Aws, None, None, true, false)),
        ("s3-external-1.amazonaws.com", ("s3", "us-east-1", Aws, None, None, false, false)),
        // Legacy S3 dash-region.
        ("s3-us-west-2.amazonaws.com", ("s3", "us-west-2", Aws, None, None, false, false)),
        ("bucket.s3-us-west-2.amazonaws.com", ("s3", "us-west-2", Aws, Some("bucket"), None, false, false)),
        // Dual-stack.
        ("s3.dualstack.us-east-1.amazonaws.com", ("s3", "us-east-1", Aws, None, None, false, true)),
        ("bkt.s3.dualstack.eu-west-1.amazonaws.com", ("s3", "eu-west-1", Aws, Some("bkt"), None, false, true)),
        ("dynamodb.us-east-1.api.aws", ("dynamodb", "us-east-1", Aws, None, None, false, true)),
        // FIPS.
        ("dynamodb-fips.us-gov-west-1.amazonaws.com", ("dynamodb", "us-gov-west-1", AwsUsGov, None, None, true, false)),
        ("s3-fips.us-east-2.amazonaws.com", ("s3", "us-east-2", Aws, None, None, true, false)),
        ("s3-fips.dualstack.us-east-2.amazonaws.com", ("s3", "us-east-2", Aws, None, None, true, true)),
        ("kms-fips.us-east-1.amazonaws.com", ("kms", "us-east-1", Aws, None, None, true, false)),
        // China and GovCloud.
        ("s3.cn-north-1.amazonaws.com.cn", ("s3", "cn-north-1", AwsCn, None, None, false, false)),
        ("dynamodb.cn-northwest-1.amazonaws.com.cn", ("dynamodb", "cn-northwest-1", AwsCn, None, None, false, false)),
        ("iam.cn-north-1.amazonaws.com.cn", ("iam", "cn-north-1", AwsCn, None, None, false, false)),
        ("sqs.us-gov-east-1.amazonaws.com", ("sqs", "us-gov-east-1", AwsUsGov, None, None, false, false)),
        ("iam.us-gov.amazonaws.com", ("iam", "us-gov-west-1", AwsUsGov, None, None, false, false)),
        // S3 virtual-hosted style.
        ("bucket.s3.us-east-1.amazonaws.com", ("s3", "us-east-1", Aws, Some("bucket"), None, false, false)),
        ("my.dotted.bucket.s3.amazonaws.com", ("s3", "us-east-1", Aws, Some("my.dotted.bucket"), None, false, false)),
        ("a.s3.b.s3.eu-west-1.amazonaws.com", ("s3", "eu-west-1", Aws, Some("a.s3.b"), None, false, false)),
        ("Bucket.S3.US-EAST-1.amazonaws.com.", ("s3", "us-east-1", Aws, Some("bucket"), None, false, false)),
        ("bucket.s3.cn-north-1.amazonaws.com.cn:443", ("s3", "cn-north-1", AwsCn, Some("bucket"), None, false, false)),
        // S3 access points.
        ("name-123456789012.s3-accesspoint.us-west-2.amazonaws.com", ("s3", "us-west-2", Aws, None, Some("name@123456789012"), false, false)),
        ("my-ap-123456789012.s3-accesspoint.dualstack.us-west-2.amazonaws.com", ("s3", "us-west-2", Aws, None, Some("my-ap@123456789012"), false, true)),
        ("ap-123456789012.s3-accesspoint-fips.us-gov-west-1.amazonaws.com", ("s3", "us-gov-west-1", AwsUsGov, None, Some("ap@123456789012"), true, false)),
        // SQS legacy hosts.
        ("queue.amazonaws.com", ("sqs", "us-east-1", Aws, None, None, false, false)),
        ("us-east-1.queue.amazonaws.com", ("sqs", "us-east-1", Aws, None, None, false, false)),
        ("eu-west-1.queue.amazonaws.com", ("sqs", "eu-west-1", Aws, None, None, false, false)),
        // DynamoDB account-based endpoints (newer SDKs).
        ("111122223333.ddb.us-east-1.amazonaws.com", ("dynamodb", "us-east-1", Aws, None, None, false, false)),
        // Interface VPC endpoints.
        ("vpce-0abc-def.sqs.us-east-1.vpce.amazonaws.com", ("sqs", "us-east-1", Aws, None, None, false, false)),
        ("bucket.vpce-0abc-def.s3.us-east-1.vpce.amazonaws.com", ("s3", "us-east-1", Aws, Some("bucket"), None, false, false)),
    ];
    let mut failures = Vec::new();
    for (host, (service, region, partition, bucket, ap, fips, dualstack)) in rows {
        let got = resolve_endpoint(host, &[]);
        let ok = got.as_ref().is_some_and(|ep| {
            ep.service == *service
                && ep.region == *region
                && ep.partition == *partition
                && ep.bucket.as_deref() == *bucket
                && ep.access_point.as_ref().map(|a| format!("{}@{}", a.name, a.account_id)).as_deref() == *ap
                && ep.fips == *fips
                && ep.dualstack == *dualstack
        });
        if !ok {
            failures.push(format!("{host}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn unknown_or_inconsistent_hosts_do_not_resolve() {
    for host in [
        "example.com",
        "amazonaws.com",
        "s3.amazonaws.com.evil.test",
        "evilamazonaws.com",
        "foo.us-east-1.amazonaws.com",
        "s3.cn-north-1.amazonaws.com",
        "dynamodb.us-east-1.amazonaws.com.cn",
        "dynamodb.amazonaws.com",
        "123456789012.s3-control.us-east-1.amazonaws.com",
        "bucket.s3-website-us-east-1.amazonaws.com",
        "s3-accesspoint.us-west-2.amazonaws.com",
        "name-12345.s3-accesspoint.us-west-2.amazonaws.com",
        "bucket..s3.amazonaws.com",
        "b.s3.amazonaws.com",
        "s3.us-east-1a.amazonaws.com",
    ] {
        assert_eq!(resolve_endpoint(host, &[]), None, "{host}");
    }
}

#[test]
fn custom_endpoints_map_hosts_ports_and_s3_virtual_hosts() {
    let custom = custom_endpoints();
    let ep = resolve_endpoint("127.0.0.1:5000", &custom).unwrap();
    assert_eq!((ep.service.as_str(), ep.region.as_str(), ep.bucket), ("s3", "us-east-1", None));
    let ep = resolve_endpoint("127.0.0.1:5001", &custom).unwrap();
    assert_eq!(ep.service, "dynamodb");
    // A configured port must match; a configured bare host matches any port.
    assert_eq!(resolve_endpoint("127.0.0.1:5999", &custom), None);
    let ep = resolve_endpoint("LOCALHOST:4566", &custom).unwrap();
    assert_eq!((ep.service.as_str(), ep.region.as_str()), ("s3", "eu-west-1"));
    let ep = resolve_endpoint("my-bucket.localhost:4566", &custom).unwrap();
    assert_eq!(ep.bucket.as_deref(), Some("my-bucket"));
    // Custom entries win over the built-in AWS names and carry their region's partition.
    let gov = [super::CustomEndpoint { host: "sqs.us-east-1.amazonaws.com".into(), service: Some("sqs".into()), region: Some("us-gov-west-1".into()) }];
    let ep = resolve_endpoint("sqs.us-east-1.amazonaws.com", &gov).unwrap();
    assert_eq!((ep.region.as_str(), ep.partition), ("us-gov-west-1", Partition::AwsUsGov));
    let v6 = [super::CustomEndpoint { host: "[::1]:5000".into(), service: Some("s3".into()), region: Some("us-east-1".into()) }];
    assert!(resolve_endpoint("[::1]:5000", &v6).is_some());
    assert!(resolve_endpoint("[::1]:5001", &v6).is_none());
}
