//! Refusals on AWS routes, in the error format of the protocol the client speaks.
//!
//! An SDK parses an error answer with its service's protocol parser: S3 reads `<Error><Code>`,
//! JSON services read `__type`/`message`, Query services read `<ErrorResponse><Error>`. Given the
//! broker's own JSON, botocore shows "An error occurred (403) … Forbidden" or a parser error, and
//! the agent never learns why. So the protocol is decided once from the request, before it is
//! consumed, and the refusal is rendered in it by `BrokerError::into_aws_response`.

use http::HeaderMap;

use super::Target;
use crate::classify::aws::resolve_endpoint;
use crate::config::SigV4Inject;
use crate::inject::sigv4;

/// How an AWS client expects to read an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorProtocol {
    /// S3's REST XML: `<Error><Code>…</Code><Message>…</Message><RequestId>…</RequestId></Error>`.
    S3Xml,
    /// awsJson 1.0/1.1 and restJson: `x-amzn-ErrorType` and `{"__type": …, "message": …}`.
    Json,
    /// awsQuery (SQS in query mode, SNS, STS, IAM, …): `<ErrorResponse><Error>…</Error><RequestId>`.
    Query,
}

/// Signing names of restJson services whose requests may carry no body (a `GET` on Lambda or
/// API Gateway), so neither a content type nor a target header says the protocol.
const REST_JSON_SERVICES: [&str; 5] = ["lambda", "execute-api", "apigateway", "bedrock", "sagemaker"];

impl AwsErrorProtocol {
    /// The protocol of a request on an AWS route; `None` when nothing says (the broker's JSON then).
    ///
    /// The service is the one the SDK signed for (its parser follows that service), else the one
    /// the host names. This only picks an error format: no decision is taken on it.
    pub fn of_request(target: &Target, cfg: &SigV4Inject, headers: &HeaderMap, query: Option<&str>) -> Option<Self> {
        let signed = sigv4::check_agent_signature(headers, query, &cfg.placeholder_access_key_id).ok().map(|s| s.service);
        let service = signed.or_else(|| {
            let authority = if target.port == 443 { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
            resolve_endpoint(&authority, &cfg.custom_endpoints).map(|e| e.service)
        });
        Self::decide(service.as_deref(), headers, query)
    }

    fn decide(service: Option<&str>, headers: &HeaderMap, query: Option<&str>) -> Option<Self> {
        // First: an S3 object may have any content type, `application/json` included.
        if service == Some("s3") {
            return Some(Self::S3Xml);
        }
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if headers.contains_key("x-amz-target") || content_type.starts_with("application/x-amz-json") {
            return Some(Self::Json);
        }
        // The Query protocol always sends a form body (`Action=…`); a presigned or GET Query call
        // carries `Action` in the query string.
        let action_in_query = query.is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "Action"));
        if content_type.starts_with("application/x-www-form-urlencoded") || action_in_query {
            return Some(Self::Query);
        }
        if content_type.starts_with("application/json") || service.is_some_and(|s| REST_JSON_SERVICES.contains(&s)) {
            return Some(Self::Json);
        }
        None
    }
}

/// The message an AWS client prints: the broker's reason, then its code and the request id, so
/// an agent (or the person reading its log) can find the audit record.
pub(super) fn message(reason: &str, broker_code: &str, request_id: &str) -> String {
    format!("{reason} (credential-broker {broker_code}, request id {request_id})")
}

/// S3's error document.
pub(super) fn s3_xml(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{}</RequestId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

/// The Query protocol's error document; `sender` is false when the fault is the service's (5xx).
pub(super) fn query_xml(code: &str, message: &str, request_id: &str, sender: bool) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        if sender { "Sender" } else { "Receiver" },
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

/// The JSON protocols' error body.
pub(super) fn json_body(code: &str, message: &str) -> String {
    serde_json::json!({ "__type": code, "message": message }).to_string()
}

/// Escape text for an XML element. Characters XML 1.0 cannot carry at all (most C0 controls) are
/// replaced, so a reason quoting the agent's bytes still yields a document the SDK can parse.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "aws_error_tests.rs"]
mod tests;
