//! S3 REST classification, one row per operation, in the shapes awscli / boto3 send.

use super::test_support::{check_err, check_ok, row};

const PATH: &str = "s3.us-east-1.amazonaws.com";
const VHOST: &str = "bucket.s3.us-east-1.amazonaws.com";
const MOTO: &str = "127.0.0.1:5000";
const B: &str = "arn:aws:s3:::bucket";
const K: &str = "arn:aws:s3:::bucket/dir/key.txt";

#[test]
fn object_operations() {
    check_ok(&[
        (row("GET", PATH, "/bucket/dir/key.txt", &[], None), &[("s3:GetObject", K)]),
        (row("GET", VHOST, "/dir/key.txt?x-id=GetObject", &[], None), &[("s3:GetObject", K)]),
        (row("HEAD", VHOST, "/dir/key.txt", &[], None), &[("s3:GetObject", K)]),
        (row("GET", MOTO, "/bucket/dir/key.txt?response-content-type=text%2Fplain", &[], None), &[("s3:GetObject", K)]),
        (row("GET", VHOST, "/dir/key.txt?versionId=3HL4kqtJlcpXroDTDmJ", &[], None), &[("s3:GetObjectVersion", K)]),
        (row("HEAD", VHOST, "/dir/key.txt?versionId=v1", &[], None), &[("s3:GetObjectVersion", K)]),
        (row("GET", VHOST, "/dir/key.txt?partNumber=2", &[], None), &[("s3:GetObject", K)]),
        (row("PUT", VHOST, "/dir/key.txt?x-id=PutObject", &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], None), &[("s3:PutObject", K)]),
        (row("PUT", PATH, "/bucket/dir/key.txt", &[], None), &[("s3:PutObject", K)]),
        (row("DELETE", VHOST, "/dir/key.txt?x-id=DeleteObject", &[], None), &[("s3:DeleteObject", K)]),
        (row("DELETE", VHOST, "/dir/key.txt?versionId=v1", &[], None), &[("s3:DeleteObjectVersion", K)]),
        (row("GET", VHOST, "/dir/key.txt?attributes", &[("x-amz-object-attributes", "ETag")], None), &[("s3:GetObjectAttributes", K)]),
        (row("GET", VHOST, "/dir/key.txt?attributes&versionId=v1", &[], None), &[("s3:GetObjectVersionAttributes", K)]),
        (row("POST", VHOST, "/dir/key.txt?restore", &[], Some("<RestoreRequest/>")), &[("s3:RestoreObject", K)]),
        (row("POST", VHOST, "/dir/key.txt?select&select-type=2", &[], None), &[("s3:GetObject", K)]),
        (row("GET", VHOST, "/dir/key.txt?torrent", &[], None), &[("s3:GetObjectTorrent", K)]),
    ]);
}

#[test]
fn keys_are_decoded_as_iam_sees_them_and_wildcards_escaped() {
    check_ok(&[
        (row("GET", VHOST, "/my%20file%2Bx+y.txt", &[], None), &[("s3:GetObject", "arn:aws:s3:::bucket/my file+x+y.txt")]),
        (row("GET", VHOST, "/a%2Fb/%E2%82%AC", &[], None), &[("s3:GetObject", "arn:aws:s3:::bucket/a/b/€")]),
        (row("GET", PATH, "/bucket/a//b/", &[], None), &[("s3:GetObject", "arn:aws:s3:::bucket/a//b/")]),
        (row("GET", VHOST, "/star%2A%3Fq%24%7Bx%7D", &[], None), &[("s3:GetObject", "arn:aws:s3:::bucket/star${*}${?}q${$}{x}")]),
        (row("GET", "my.dotted.bucket.s3.amazonaws.com", "/k", &[], None), &[("s3:GetObject", "arn:aws:s3:::my.dotted.bucket/k")]),
    ]);
}

#[test]
fn partitions_and_access_points() {
    check_ok(&[
        (row("GET", "bucket.s3.cn-north-1.amazonaws.com.cn", "/k", &[], None), &[("s3:GetObject", "arn:aws-cn:s3:::bucket/k")]),
        (row("GET", "s3.us-gov-west-1.amazonaws.com", "/bucket/k", &[], None), &[("s3:GetObject", "arn:aws-us-gov:s3:::bucket/k")]),
        (
            row("GET", "my-ap-123456789012.s3-accesspoint.us-west-2.amazonaws.com", "/dir/k", &[], None),
            &[("s3:GetObject", "arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap/object/dir/k")],
        ),
        (
            row("GET", "my-ap-123456789012.s3-accesspoint.us-west-2.amazonaws.com", "/?list-type=2", &[], None),
            &[("s3:ListBucket", "arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap")],
        ),
    ]);
}

#[test]
fn copy_object_reads_the_source_and_writes_the_destination() {
    check_ok(&[
        (
            row("PUT", VHOST, "/dir/key.txt", &[("x-amz-copy-source", "src-bucket/a%20b.txt")], None),
            &[("s3:GetObject", "arn:aws:s3:::src-bucket/a b.txt"), ("s3:PutObject", K)],
        ),
        (
            row("PUT", VHOST, "/dir/key.txt", &[("x-amz-copy-source", "/src-bucket/x%3Fy?versionId=v9")], None),
            &[("s3:GetObjectVersion", "arn:aws:s3:::src-bucket/x${?}y"), ("s3:PutObject", K)],
        ),
        (
            row("PUT", VHOST, "/dir/key.txt", &[("x-amz-copy-source", "arn%3Aaws%3As3%3Aus-west-2%3A123456789012%3Aaccesspoint%2Fap%2Fobject%2Fk")], None),
            &[("s3:GetObject", "arn:aws:s3:us-west-2:123456789012:accesspoint/ap/object/k"), ("s3:PutObject", K)],
        ),
        (
            row("PUT", VHOST, "/dir/key.txt?partNumber=3&uploadId=abc", &[("x-amz-copy-source", "src/k"), ("x-amz-copy-source-range", "bytes=0-9")], None),
            &[("s3:GetObject", "arn:aws:s3:::src/k"), ("s3:PutObject", K)],
        ),
    ]);
}

#[test]
fn headers_that_iam_authorizes_separately() {
    check_ok(&[
        (
            row("PUT", VHOST, "/dir/key.txt", &[("x-amz-acl", "public-read"), ("x-amz-tagging", "a=b")], None),
            &[("s3:PutObject", K), ("s3:PutObjectAcl", K), ("s3:PutObjectTagging", K)],
        ),
        (
            row("PUT", VHOST, "/dir/key.txt", &[("x-amz-object-lock-mode", "GOVERNANCE"), ("x-amz-object-lock-legal-hold", "ON")], None),
            &[("s3:PutObject", K), ("s3:PutObjectRetention", K), ("s3:PutObjectLegalHold", K)],
        ),
        (row("POST", VHOST, "/dir/key.txt?uploads", &[("x-amz-grant-read", "id=x")], None), &[("s3:PutObject", K), ("s3:PutObjectAcl", K)]),
        (
            row("DELETE", VHOST, "/dir/key.txt?versionId=v", &[("x-amz-bypass-governance-retention", "true")], None),
            &[("s3:DeleteObjectVersion", K), ("s3:BypassGovernanceRetention", K)],
        ),
        (
            row("PUT", VHOST, "/", &[("x-amz-bucket-object-lock-enabled", "true"), ("x-amz-object-ownership", "BucketOwnerEnforced")], None),
            &[("s3:CreateBucket", B), ("s3:PutBucketObjectLockConfiguration", B), ("s3:PutBucketVersioning", B), ("s3:PutBucketOwnershipControls", B)],
        ),
    ]);
}

#[test]
fn multipart_upload() {
    check_ok(&[
        (row("POST", VHOST, "/dir/key.txt?uploads", &[], None), &[("s3:PutObject", K)]),
        (row("POST", PATH, "/bucket/dir/key.txt?uploads&x-id=CreateMultipartUpload", &[], None), &[("s3:PutObject", K)]),
        (row("PUT", PATH, "/bucket/dir/key.txt?partNumber=1&uploadId=VXBsb2FkIElE", &[("content-encoding", "aws-chunked")], None), &[("s3:PutObject", K)]),
        (row("POST", VHOST, "/dir/key.txt?uploadId=VXBsb2FkIElE", &[], Some("<CompleteMultipartUpload/>")), &[("s3:PutObject", K)]),
        (row("DELETE", VHOST, "/dir/key.txt?uploadId=VXBsb2FkIElE&x-id=AbortMultipartUpload", &[], None), &[("s3:AbortMultipartUpload", K)]),
        (row("GET", VHOST, "/dir/key.txt?uploadId=VXBsb2FkIElE&max-parts=1000", &[], None), &[("s3:ListMultipartUploadParts", K)]),
        (row("GET", VHOST, "/?uploads&prefix=dir%2F", &[], None), &[("s3:ListBucketMultipartUploads", B)]),
    ]);
}

#[test]
fn bucket_and_service_operations() {
    check_ok(&[
        (row("GET", PATH, "/", &[], None), &[("s3:ListAllMyBuckets", "*")]),
        (row("GET", PATH, "/?x-id=ListBuckets&max-buckets=1000", &[], None), &[("s3:ListAllMyBuckets", "*")]),
        (row("GET", PATH, "/bucket?list-type=2&prefix=&encoding-type=url", &[], None), &[("s3:ListBucket", B)]),
        (
            row("GET", PATH, "/bucket/?list-type=2&prefix=dir%2F&delimiter=%2F&max-keys=1000&continuation-token=abc&fetch-owner=false", &[], None),
            &[("s3:ListBucket", B)],
        ),
        (row("GET", VHOST, "/?prefix=x&marker=y", &[], None), &[("s3:ListBucket", B)]),
        (row("HEAD", VHOST, "/", &[], None), &[("s3:ListBucket", B)]),
        (row("GET", VHOST, "/?versions&key-marker=a&version-id-marker=b", &[], None), &[("s3:ListBucketVersions", B)]),
        (row("PUT", MOTO, "/bucket", &[], Some("<CreateBucketConfiguration/>")), &[("s3:CreateBucket", B)]),
        (row("DELETE", MOTO, "/bucket", &[], None), &[("s3:DeleteBucket", B)]),
        (row("GET", VHOST, "/?location", &[], None), &[("s3:GetBucketLocation", B)]),
        (row("GET", VHOST, "/?acl", &[], None), &[("s3:GetBucketAcl", B)]),
        (row("PUT", VHOST, "/?acl", &[], None), &[("s3:PutBucketAcl", B)]),
        (row("GET", VHOST, "/?tagging", &[], None), &[("s3:GetBucketTagging", B)]),
        (row("PUT", VHOST, "/?tagging", &[], None), &[("s3:PutBucketTagging", B)]),
        (row("DELETE", VHOST, "/?tagging", &[], None), &[("s3:PutBucketTagging", B)]),
        (row("GET", VHOST, "/?versioning", &[], None), &[("s3:GetBucketVersioning", B)]),
        (row("PUT", VHOST, "/?versioning", &[], None), &[("s3:PutBucketVersioning", B)]),
        (row("GET", VHOST, "/?lifecycle", &[], None), &[("s3:GetLifecycleConfiguration", B)]),
        (row("PUT", VHOST, "/?lifecycle", &[], None), &[("s3:PutLifecycleConfiguration", B)]),
        (row("DELETE", VHOST, "/?lifecycle", &[], None), &[("s3:PutLifecycleConfiguration", B)]),
        (row("GET", VHOST, "/?policy", &[], None), &[("s3:GetBucketPolicy", B)]),
        (row("PUT", VHOST, "/?policy", &[], None), &[("s3:PutBucketPolicy", B)]),
        (row("DELETE", VHOST, "/?policy", &[], None), &[("s3:DeleteBucketPolicy", B)]),
        (row("GET", VHOST, "/?cors", &[], None), &[("s3:GetBucketCORS", B)]),
        (row("DELETE", VHOST, "/?cors", &[], None), &[("s3:PutBucketCORS", B)]),
        (row("GET", VHOST, "/?encryption", &[], None), &[("s3:GetEncryptionConfiguration", B)]),
        (row("PUT", VHOST, "/?encryption", &[], None), &[("s3:PutEncryptionConfiguration", B)]),
        (row("GET", VHOST, "/?website", &[], None), &[("s3:GetBucketWebsite", B)]),
        (row("DELETE", VHOST, "/?website", &[], None), &[("s3:DeleteBucketWebsite", B)]),
        (row("PUT", VHOST, "/?notification", &[], None), &[("s3:PutBucketNotification", B)]),
        (row("GET", VHOST, "/?object-lock", &[], None), &[("s3:GetBucketObjectLockConfiguration", B)]),
        (row("GET", VHOST, "/?publicAccessBlock", &[], None), &[("s3:GetBucketPublicAccessBlock", B)]),
        (row("GET", VHOST, "/?metrics&id=m1", &[], None), &[("s3:GetMetricsConfiguration", B)]),
    ]);
}

#[test]
fn object_sub_resources() {
    check_ok(&[
        (row("GET", VHOST, "/dir/key.txt?tagging", &[], None), &[("s3:GetObjectTagging", K)]),
        (row("GET", VHOST, "/dir/key.txt?tagging&versionId=v", &[], None), &[("s3:GetObjectVersionTagging", K)]),
        (row("PUT", VHOST, "/dir/key.txt?tagging", &[], None), &[("s3:PutObjectTagging", K)]),
        (row("DELETE", VHOST, "/dir/key.txt?tagging", &[], None), &[("s3:DeleteObjectTagging", K)]),
        (row("GET", VHOST, "/dir/key.txt?acl", &[], None), &[("s3:GetObjectAcl", K)]),
        (row("PUT", VHOST, "/dir/key.txt?acl&versionId=v", &[], None), &[("s3:PutObjectVersionAcl", K)]),
        (row("GET", VHOST, "/dir/key.txt?retention", &[], None), &[("s3:GetObjectRetention", K)]),
        (
            row("PUT", VHOST, "/dir/key.txt?retention", &[("x-amz-bypass-governance-retention", "true")], None),
            &[("s3:PutObjectRetention", K), ("s3:BypassGovernanceRetention", K)],
        ),
        (row("GET", VHOST, "/dir/key.txt?legal-hold", &[], None), &[("s3:GetObjectLegalHold", K)]),
        (row("PUT", VHOST, "/dir/key.txt?legal-hold", &[], None), &[("s3:PutObjectLegalHold", K)]),
    ]);
}

#[test]
fn delete_objects_scopes_each_key_in_the_body() {
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a.txt</Key></Object><Object><Key>dir/b&amp;c.txt</Key><VersionId>v2</VersionId></Object><Object><Key>a.txt</Key></Object><Quiet>true</Quiet></Delete>"#;
    check_ok(&[
        (
            row("POST", VHOST, "/?delete", &[("content-md5", "x")], Some(body)),
            &[("s3:DeleteObject", "arn:aws:s3:::bucket/a.txt"), ("s3:DeleteObjectVersion", "arn:aws:s3:::bucket/dir/b&c.txt")],
        ),
        (row("POST", MOTO, "/bucket?delete", &[], Some("<Delete><Object><Key>k</Key></Object></Delete>")), &[("s3:DeleteObject", "arn:aws:s3:::bucket/k")]),
    ]);
    check_err(&[(row("POST", VHOST, "/?delete", &[], None), "buffered body"), (row("POST", VHOST, "/?delete", &[], Some("<Delete></Delete>")), "no objects")]);
}

#[test]
fn requests_the_classifier_does_not_understand_are_refused() {
    check_err(&[
        // Unknown or mis-cased markers: S3 might act on them.
        (row("GET", VHOST, "/dir/key.txt?uploadz", &[], None), "unknown query parameter \"uploadz\""),
        (row("GET", VHOST, "/dir/key.txt?ACL", &[], None), "unknown query parameter"),
        (row("PUT", VHOST, "/?intelligent-tieringz", &[], None), "unknown query parameter"),
        (row("GET", VHOST, "/?acl&policy", &[], None), "several sub-resources"),
        (row("GET", VHOST, "/k?versionId=a&versionId=b", &[], None), "more than once"),
        // Methods and markers that do not go together.
        (row("POST", VHOST, "/dir/key.txt", &[], None), "unclassified"),
        (row("PATCH", VHOST, "/dir/key.txt", &[], None), "unclassified"),
        (row("OPTIONS", VHOST, "/", &[], None), "unclassified"),
        (row("POST", VHOST, "/?acl", &[], None), "unclassified"),
        (row("GET", VHOST, "/?uploadId=x", &[], None), "unclassified"),
        (row("GET", VHOST, "/dir/key.txt?versions", &[], None), "unclassified"),
        (row("PUT", VHOST, "/dir/key.txt?partNumber=1", &[], None), "unclassified"),
        (row("PUT", VHOST, "/dir/key.txt?versionId=v", &[], None), "unclassified"),
        (row("GET", VHOST, "/dir/key.txt?uploadId=u&acl", &[], None), "unclassified"),
        (row("PUT", VHOST, "/dir/key.txt?tagging", &[("x-amz-copy-source", "b/k")], None), "x-amz-copy-source"),
        (row("DELETE", PATH, "/", &[], None), "the service"),
        (row("GET", PATH, "/?acl", &[], None), "the service"),
        // Malformed names and encodings.
        (row("GET", PATH, "/b*/k", &[], None), "bucket name"),
        (row("GET", PATH, "/bu%2Fcket/k", &[], None), "bucket name"),
        (row("GET", PATH, "//k", &[], None), "bucket name"),
        (row("GET", VHOST, "/bad%zz", &[], None), "malformed percent-encoding"),
        (row("GET", VHOST, "/bad%ff", &[], None), "UTF-8"),
        (row("PUT", VHOST, "/k", &[("x-amz-copy-source", "nokey")], None), "x-amz-copy-source"),
        (row("PUT", VHOST, "/k", &[("x-amz-copy-source", "b/k?partNumber=1")], None), "x-amz-copy-source"),
        (row("PUT", VHOST, "/k", &[("x-amz-copy-source", "arn:aws-cn:s3:us-west-2:123456789012:accesspoint/ap/object/k")], None), "x-amz-copy-source"),
        (row("PUT", VHOST, "/k", &[("x-amz-copy-source", "b/k"), ("x-amz-copy-source", "c/k")], None), "more than once"),
    ]);
}
