use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const PH: &str = "credential-broker-placeholder";
const REAL: &str = "AKIAIOSFODNN7EXAMPLE";
const TOKEN: &str = "FwoGZXIvYXdzEagent-held-session-token";
const SIG: &str = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
const GOOD: &str = "AWS4-HMAC-SHA256 Credential=credential-broker-placeholder/20261130/us-east-1/s3/aws4_request, \
                    SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
                    Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
const PRESIGNED: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=credential-broker-placeholder%2F20261130%2Fus-east-1%2Fs3%2Faws4_request\
                         &X-Amz-Date=20261130T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
                         &X-Amz-Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";

/// The outcome as a short tag, so a table row reads as one line.
fn outcome(headers: &[(&str, &[u8])], query: Option<&str>) -> (&'static str, String) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
    }
    match check_agent_signature(&map, query, PH) {
        Ok(s) => ("ok", format!("{}/{}/{}", s.date, s.region, s.service)),
        Err(e) => {
            let tag = match e {
                AgentSignatureError::NotPlaceholder(_) => "real key",
                AgentSignatureError::SessionToken(_) => "session token",
                AgentSignatureError::Unsigned => "unsigned",
                AgentSignatureError::Unsupported(_) => "unsupported",
                AgentSignatureError::Malformed(_) => "malformed",
                AgentSignatureError::Ambiguous(_) => "ambiguous",
            };
            (tag, e.to_string())
        }
    }
}

/// Request headers, as (name, raw bytes).
type Headers = Vec<(&'static str, Vec<u8>)>;
/// One table row: what it tries, the headers, the query, the expected outcome.
type Row<'a> = (&'a str, Headers, Option<&'a str>, &'a str);

fn auth(v: &str) -> Headers {
    vec![("authorization", v.as_bytes().to_vec())]
}

#[test]
fn only_a_well_formed_sigv4_signature_by_the_placeholder_passes() {
    let good_no_space = GOOD.replace(", ", ",");
    let other_scope = GOOD.replace("20261130/us-east-1/s3", "20260229/eu-west-2/execute-api");
    let presigned_no_expiry = PRESIGNED.replace("&X-Amz-Expires=3600", "");
    let presigned_more = format!("versionId=3&{PRESIGNED}&response-content-type=text%2Fplain");
    let rows: &[Row] = &[
        ("header form, as the SDKs write it", auth(GOOD), None, "20261130/us-east-1/s3"),
        ("components after a bare comma", auth(&good_no_space), None, "20261130/us-east-1/s3"),
        ("another region and service", auth(&other_scope), Some("a=1"), "20260229/eu-west-2/execute-api"),
        ("presigned URL", vec![], Some(PRESIGNED), "20261130/us-east-1/s3"),
        ("presigned URL without X-Amz-Expires", vec![], Some(&presigned_no_expiry), "20261130/us-east-1/s3"),
        ("presigned URL among other parameters", vec![], Some(&presigned_more), "20261130/us-east-1/s3"),
    ];
    for (name, headers, query, scope) in rows {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        assert_eq!(outcome(&headers, *query), ("ok", scope.to_string()), "{name}");
    }
}

#[test]
fn every_other_shape_is_refused_for_a_stated_reason() {
    let sigv2 = format!("AWS {REAL}:frJIUN8DYpKDtOLCwo//yllqDzg=");
    let sigv2_placeholder = format!("AWS {PH}:frJIUN8DYpKDtOLCwo//yllqDzg=");
    let lower = GOOD.replace("Credential=", "credential=");
    let lower_real = lower.replace(PH, REAL);
    let tab = GOOD.replace(" Credential=", "\tCredential=");
    let tab_real = tab.replace(PH, REAL);
    let sigv4a =
        format!("AWS4-ECDSA-P256-SHA256 Credential={PH}/20261130/s3/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100ab");
    let presigned_sigv4a = PRESIGNED.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
    let real_key = GOOD.replace(PH, REAL);
    let appended = GOOD.replace(PH, &format!("{PH}{REAL}"));
    let extra_path = GOOD.replace(&format!("{PH}/"), &format!("{PH}/{REAL}/"));
    let extra_component = format!("{GOOD}, Foo=bar");
    let missing_signature = GOOD.split(", Signature=").next().unwrap().to_string();
    let reordered = format!("AWS4-HMAC-SHA256 SignedHeaders=host, Credential={PH}/20261130/us-east-1/s3/aws4_request, Signature={SIG}");
    let short_credential = GOOD.replace("/s3/aws4_request", "/aws4_request");
    let bad_terminator = GOOD.replace("aws4_request", "aws4_request2");
    let upper_region = GOOD.replace("us-east-1", "US-EAST-1");
    let bad_date = GOOD.replace("20261130", "20261330");
    let short_signature = GOOD.replace(SIG, "abc");
    let upper_signature = GOOD.replace(SIG, &SIG.to_uppercase());
    let empty_signed_headers = GOOD.replace("SignedHeaders=host;x-amz-content-sha256;x-amz-date", "SignedHeaders=");
    let two_spaces = GOOD.replace(" Credential=", "  Credential=");
    let lower_algorithm = GOOD.replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256");
    let mut non_ascii = GOOD.as_bytes().to_vec();
    non_ascii.extend_from_slice(b"\xff\xfe");
    let presigned_real = PRESIGNED.replace(PH, REAL);
    let presigned_lower_token = format!("{PRESIGNED}&x-amz-security-token={TOKEN}");
    let presigned_token = format!("{PRESIGNED}&X-Amz-Security-Token={TOKEN}");
    let duplicate = format!("{PRESIGNED}&X-Amz-Credential={PH}%2F20261130%2Fus-west-2%2Fs3%2Faws4_request");
    let lower_param = PRESIGNED.replace("X-Amz-Credential", "x-amz-credential");
    let lower_param_real = format!("x-amz-credential={REAL}%2F20261130%2Fus-east-1%2Fs3%2Faws4_request");
    let no_signature = PRESIGNED.split("&X-Amz-Signature").next().unwrap().to_string();
    let other_day = PRESIGNED.replace("X-Amz-Date=20261130T", "X-Amz-Date=20261201T");
    let multibyte_date = PRESIGNED.replace("X-Amz-Date=20261130T120000Z", "X-Amz-Date=2026113%C3%A9120000Z");
    let zero_expiry = PRESIGNED.replace("X-Amz-Expires=3600", "X-Amz-Expires=0");
    let long_expiry = PRESIGNED.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801");
    let plus_expiry = PRESIGNED.replace("X-Amz-Expires=3600", "X-Amz-Expires=%2B5");
    let sigv2_query = format!("AWSAccessKeyId={REAL}&Expires=1893456000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D");
    let sigv2_query_placeholder = sigv2_query.replace(REAL, PH);
    let both_presigned = format!("{PRESIGNED}&AWSAccessKeyId={PH}");
    let token_beside = format!("a=1&X-Amz-Security-Token={TOKEN}");
    let token_header = |name: &'static str| vec![("authorization", GOOD.as_bytes().to_vec()), (name, TOKEN.as_bytes().to_vec())];

    let rows: Vec<Row> = vec![
        ("nothing signed", vec![], None, "unsigned"),
        ("only ordinary query parameters", vec![], Some("list-type=2&prefix=a"), "unsigned"),
        ("SigV2 with a real key", auth(&sigv2), None, "real key"),
        ("SigV2 with the placeholder", auth(&sigv2_placeholder), None, "unsupported"),
        ("lower-case credential=, real key", auth(&lower_real), None, "real key"),
        ("lower-case credential=, placeholder", auth(&lower), None, "malformed"),
        ("a tab before Credential=, real key", auth(&tab_real), None, "real key"),
        ("a tab before Credential=, placeholder", auth(&tab), None, "malformed"),
        ("two spaces after the algorithm", auth(&two_spaces), None, "malformed"),
        ("the algorithm in lower case", auth(&lower_algorithm), None, "unsupported"),
        ("SigV4a header", auth(&sigv4a), None, "unsupported"),
        ("SigV4a presigned", vec![], Some(&presigned_sigv4a), "unsupported"),
        ("a bearer token", auth(&format!("Bearer {PH}")), None, "unsupported"),
        ("an empty Authorization header", auth(""), None, "malformed"),
        ("a real key in SigV4", auth(&real_key), None, "real key"),
        ("a real key appended to the placeholder", auth(&appended), None, "real key"),
        ("a real key as an extra credential segment", auth(&extra_path), None, "real key"),
        ("an extra component", auth(&extra_component), None, "malformed"),
        ("no Signature", auth(&missing_signature), None, "malformed"),
        ("components out of order", auth(&reordered), None, "malformed"),
        ("a credential without service", auth(&short_credential), None, "malformed"),
        ("a credential not ending in aws4_request", auth(&bad_terminator), None, "malformed"),
        ("an upper-case region", auth(&upper_region), None, "malformed"),
        ("month 13", auth(&bad_date), None, "malformed"),
        ("a short signature", auth(&short_signature), None, "malformed"),
        ("an upper-case signature", auth(&upper_signature), None, "malformed"),
        ("no signed headers", auth(&empty_signed_headers), None, "malformed"),
        ("bytes that are not ASCII", vec![("authorization", non_ascii)], None, "malformed"),
        ("two Authorization headers", vec![("authorization", GOOD.as_bytes().to_vec()), ("authorization", GOOD.as_bytes().to_vec())], None, "ambiguous"),
        ("header and presigned query together", auth(GOOD), Some(PRESIGNED), "ambiguous"),
        ("a session token header", token_header("x-amz-security-token"), None, "session token"),
        ("a session token header, other case", token_header("X-AMZ-SECURITY-TOKEN"), None, "session token"),
        ("an empty session token header", vec![("authorization", GOOD.as_bytes().to_vec()), ("x-amz-security-token", vec![])], None, "session token"),
        ("a session token in a presigned URL", vec![], Some(&presigned_token), "session token"),
        ("a session token in lower case", vec![], Some(&presigned_lower_token), "session token"),
        ("a session token beside a header signature", auth(GOOD), Some(&token_beside), "session token"),
        ("a presigned real key", vec![], Some(&presigned_real), "real key"),
        ("SigV2 presigned, real key", vec![], Some(&sigv2_query), "real key"),
        ("SigV2 presigned, placeholder", vec![], Some(&sigv2_query_placeholder), "unsupported"),
        ("SigV2 presigned beside a header signature", auth(GOOD), Some(&sigv2_query), "ambiguous"),
        ("SigV2 and SigV4 presigned together", vec![], Some(&both_presigned), "ambiguous"),
        ("X-Amz-Credential twice", vec![], Some(&duplicate), "ambiguous"),
        ("x-amz-credential in lower case", vec![], Some(&lower_param), "ambiguous"),
        ("x-amz-credential in lower case, real key, no header", vec![], Some(&lower_param_real), "ambiguous"),
        ("presigned without X-Amz-Signature", vec![], Some(&no_signature), "malformed"),
        ("presigned X-Amz-Date on another day", vec![], Some(&other_day), "malformed"),
        ("presigned X-Amz-Date with a multi-byte character", vec![], Some(&multibyte_date), "malformed"),
        ("presigned expiry 0", vec![], Some(&zero_expiry), "malformed"),
        ("presigned expiry over 7 days", vec![], Some(&long_expiry), "malformed"),
        ("presigned expiry with a sign", vec![], Some(&plus_expiry), "malformed"),
    ];
    for (name, headers, query, expected) in &rows {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let (tag, message) = outcome(&headers, *query);
        assert_eq!(tag, *expected, "{name}: {message}");
        assert!(!message.contains(REAL) && !message.contains(TOKEN), "{name}: a secret in the message: {message}");
        if tag == "real key" {
            let shown = if name.contains("appended") { "\"cred…\"" } else { "\"AKIA…\"" };
            assert!(message.contains(shown), "{name}: the key is named by its first four characters: {message}");
        }
    }
}

#[test]
fn a_refused_key_id_cannot_shape_the_message() {
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%0Ab%22c%2F20261130%2Fus-east-1%2Fs3%2Faws4_request";
    let (tag, message) = outcome(&[], Some(query));
    assert_eq!(tag, "real key");
    assert!(message.contains("\"a?b?…\""), "{message}");
}
