use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::pipeline::{BrokerError, REQUEST_ID_HEADER};

const ID: &str = "0190c0de-0000-7000-8000-000000000001";

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

async fn render(e: BrokerError, protocol: AwsErrorProtocol) -> (StatusCode, HeaderMap, String) {
    let resp = e.into_aws_response(protocol, ID);
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn the_protocol_follows_what_the_request_says() {
    use AwsErrorProtocol::*;
    let json = headers(&[("x-amz-target", "DynamoDB_20120810.PutItem"), ("content-type", "application/x-amz-json-1.0")]);
    let form = headers(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8")]);
    let rest_json = headers(&[("content-type", "application/json")]);
    let none = HeaderMap::new();
    let cases = [
        (Some("s3"), &none, None, Some(S3Xml)),
        // An object uploaded as JSON or as a form is still S3.
        (Some("s3"), &rest_json, None, Some(S3Xml)),
        (Some("s3"), &form, None, Some(S3Xml)),
        (Some("dynamodb"), &json, None, Some(Json)),
        // Whatever the host said: the target header is a JSON protocol.
        (None, &json, None, Some(Json)),
        (Some("sns"), &form, None, Some(Query)),
        (Some("sts"), &none, Some("Action=GetCallerIdentity&Version=2011-06-15"), Some(Query)),
        (Some("lambda"), &none, None, Some(Json)),
        (Some("execute-api"), &rest_json, None, Some(Json)),
        (Some("kms"), &none, None, None),
    ];
    for (service, h, query, expected) in cases {
        assert_eq!(AwsErrorProtocol::decide(service, h, query), expected, "{service:?} {h:?} {query:?}");
    }
}

#[tokio::test]
async fn s3_refusals_are_s3_error_documents() {
    let (status, h, body) = render(BrokerError::Denied("deleting buckets needs a human".into()), AwsErrorProtocol::S3Xml).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h["content-type"], "application/xml");
    assert_eq!(h["x-amz-request-id"], ID);
    assert_eq!(h[REQUEST_ID_HEADER], ID);
    assert_eq!(
        body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>denied by policy: deleting buckets needs a human \
             (credential-broker policy_denied, request id {ID})</Message><RequestId>{ID}</RequestId></Error>"
        )
    );
    let (status, _, body) = render(BrokerError::PayloadTooLarge(1024), AwsErrorProtocol::S3Xml).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("<Code>EntityTooLarge</Code>"), "{body}");
}

#[tokio::test]
async fn json_refusals_carry_the_type_in_the_header_and_the_body() {
    let (status, h, body) = render(BrokerError::Unclassified("duplicate key TableName".into()), AwsErrorProtocol::Json).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h["x-amzn-errortype"], "AccessDeniedException");
    assert_eq!(h["x-amzn-requestid"], ID);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["__type"], "AccessDeniedException");
    assert_eq!(body["message"], format!("request could not be classified: duplicate key TableName (credential-broker unclassified_request, request id {ID})"));
    let (status, h, _) = render(BrokerError::BadRequest("framing".into()), AwsErrorProtocol::Json).await;
    assert_eq!((status, &h["x-amzn-errortype"]), (StatusCode::BAD_REQUEST, &HeaderValue::from_static("ValidationException")));
    let mint = BrokerError::MintFailed { provider: "sts".into(), message: "unreachable".into() };
    let (status, h, _) = render(mint, AwsErrorProtocol::Json).await;
    assert_eq!((status, &h["x-amzn-errortype"]), (StatusCode::SERVICE_UNAVAILABLE, &HeaderValue::from_static("ServiceUnavailableException")));
}

#[tokio::test]
async fn query_refusals_are_error_responses_with_escaped_text() {
    let reason = r#"the request is signed with access key id "AKIA…", not <the> placeholder & more"#;
    let (status, h, body) = render(BrokerError::NotPlaceholder(reason.into()), AwsErrorProtocol::Query).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h["content-type"], "text/xml");
    assert_eq!(
        body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>the request is \
             signed with access key id &quot;AKIA…&quot;, not &lt;the&gt; placeholder &amp; more (credential-broker real_credential_refused, \
             request id {ID})</Message></Error><RequestId>{ID}</RequestId></ErrorResponse>"
        )
    );
    let (status, _, body) = render(BrokerError::AuditUnavailable("disk full".into()), AwsErrorProtocol::Query).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("<Type>Receiver</Type><Code>ServiceUnavailable</Code>"), "{body}");
}

#[tokio::test]
async fn a_missing_identity_keeps_the_proxy_challenge() {
    let (status, h, body) = render(BrokerError::IdentityRequired("no agent token".into()), AwsErrorProtocol::S3Xml).await;
    assert_eq!(status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(h["proxy-authenticate"], "Bearer");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "identity_required");
}

#[test]
fn xml_escape_replaces_markup_and_characters_xml_cannot_carry() {
    assert_eq!(xml_escape("a<b>&\"c'\u{1}\td\u{FFFE}"), "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}\td\u{FFFD}");
}
