//! Which path an AWS request is classified by and forwarded with.

use http::{HeaderMap, Method};

use super::request_path;
use crate::classify::aws::{classify, resolve_endpoint, AwsRequest};
use crate::pipeline::BrokerError;

fn s3_resource(host: &str, path: &str) -> (String, String) {
    let endpoint = resolve_endpoint(host, &[]).unwrap();
    let forwarded = request_path("", &endpoint, path).unwrap();
    let headers = HeaderMap::new();
    let req = AwsRequest { method: &Method::GET, path: &forwarded, query: None, headers: &headers, body: None };
    let scope = classify(&req, &endpoint, "123456789012").unwrap();
    assert_eq!(scope.permissions.len(), 1);
    assert_eq!(scope.permissions[0].action, "s3:GetObject");
    (forwarded, scope.permissions[0].resource.clone())
}

#[test]
fn an_s3_key_is_literal_and_the_scope_names_exactly_the_key_forwarded() {
    // `..` inside an S3 key is part of the key; S3 serves exactly that key, so it is neither
    // resolved nor refused, and the policy sees the same key.
    let (forwarded, resource) = s3_resource("s3.us-east-1.amazonaws.com", "/bucket/a/../b.txt");
    assert_eq!(forwarded, "/bucket/a/../b.txt");
    assert_eq!(resource, "arn:aws:s3:::bucket/a/../b.txt");
    let (forwarded, resource) = s3_resource("bucket.s3.us-east-1.amazonaws.com", "/a/%2e%2e/b.txt");
    assert_eq!(forwarded, "/a/%2e%2e/b.txt");
    assert_eq!(resource, "arn:aws:s3:::bucket/a/../b.txt");
    let (forwarded, resource) = s3_resource("s3.us-east-1.amazonaws.com", "/bucket/a//b");
    assert_eq!(forwarded, "/bucket/a//b");
    assert_eq!(resource, "arn:aws:s3:::bucket/a//b");
}

#[test]
fn other_aws_services_get_the_canonical_path() {
    let sqs = resolve_endpoint("sqs.us-east-1.amazonaws.com", &[]).unwrap();
    assert_eq!(request_path("", &sqs, "/123456789012/jobs/../other").unwrap(), "/123456789012/other");
    assert_eq!(request_path("", &sqs, "/").unwrap(), "/");
    let dynamodb = resolve_endpoint("dynamodb.us-east-1.amazonaws.com", &[]).unwrap();
    assert!(matches!(request_path("", &dynamodb, "/%2f"), Err(BrokerError::UnsafePath { .. })));
    assert!(matches!(request_path("", &dynamodb, "/../"), Err(BrokerError::UnsafePath { .. })));
}
