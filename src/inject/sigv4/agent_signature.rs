//! The agent's own signature, checked before anything else happens on an AWS route.
//!
//! Exactly two shapes are accepted, both SigV4 by the placeholder key:
//! - header: `Authorization: AWS4-HMAC-SHA256 Credential=<placeholder>/<yyyymmdd>/<region>/<service>/aws4_request,
//!   SignedHeaders=<h1;h2…>, Signature=<64 hex>`;
//! - presigned URL: `X-Amz-Algorithm=AWS4-HMAC-SHA256`, `X-Amz-Credential`, `X-Amz-Date`,
//!   `X-Amz-SignedHeaders`, `X-Amz-Signature` (and optionally `X-Amz-Expires`) in the query.
//!
//! No `X-Amz-Security-Token` (header or query, any case) is accepted with either: a session token
//! is someone's live credential.
//!
//! Everything else is refused, and deliberately so: the broker used to look for `Credential=` and
//! let anything it did not find through as "unsigned", so every spelling it did not know (SigV2,
//! `credential=`, a tab, bytes that are not ASCII) fell into the accepted branch. With one accepted
//! shape, a spelling nobody thought of is refused rather than waved through. The agent's signature
//! value itself cannot be verified (the broker does not know what the agent used as the placeholder
//! secret) and does not need to be: it is dropped and the request re-signed. What the shape proves is
//! that the client holds the placeholder and nothing else, so a leaked key is reported, not laundered.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

/// The only algorithm accepted from the agent.
const SIGV4: &str = "AWS4-HMAC-SHA256";
/// SigV4a, the asymmetric multi-region variant.
const SIGV4A: &str = "AWS4-ECDSA-P256-SHA256";
/// A session token, in a header or a presigned URL's query: always someone's live credential.
const SECURITY_TOKEN: &str = "X-Amz-Security-Token";
/// The presigned-URL parameters, as AWS spells them.
const PRESIGN: [&str; 6] = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"];
const ALGORITHM: usize = 0;
const CREDENTIAL: usize = 1;
const DATE: usize = 2;
const EXPIRES: usize = 3;
const SIGNED_HEADERS: usize = 4;
const SIGNATURE: usize = 5;
/// The longest validity AWS allows a presigned URL (7 days).
const MAX_EXPIRES_SECONDS: u64 = 604_800;

/// What the agent's SDK signed for: the credential scope's date, region and service. Not acted on
/// yet; it says where the SDK thought it was sending the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedScope {
    /// `yyyymmdd`
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Why the agent's request was refused before classification. Messages never contain a secret:
/// a key id is cut to four characters, a session token is never quoted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentSignatureError {
    #[error("the request is signed with access key id {0:?}, not the configured placeholder; agents must not hold real AWS keys")]
    NotPlaceholder(String),
    #[error("the request carries an AWS session token ({0}); agents must not hold AWS session credentials: unset AWS_SESSION_TOKEN and sign with the placeholder key only")]
    SessionToken(&'static str),
    #[error("the request is not signed; AWS requests through the broker must be SigV4-signed with the placeholder access key id (the AWS SDKs and CLI do this by default)")]
    Unsigned,
    #[error("unsupported AWS signature {0}; only SigV4 (AWS4-HMAC-SHA256) with the placeholder access key id is accepted")]
    Unsupported(String),
    #[error("malformed SigV4 signature: {0}")]
    Malformed(String),
    #[error("ambiguous AWS signature: {0}")]
    Ambiguous(String),
}

impl AgentSignatureError {
    /// The agent holds, or presents, someone's real credential (as opposed to a broken signature).
    pub fn is_real_credential(&self) -> bool {
        matches!(self, Self::NotPlaceholder(_) | Self::SessionToken(_))
    }
}

/// Accept only a well-formed SigV4 signature by `placeholder`, in exactly one place; return the
/// credential scope it names.
pub fn check_agent_signature(headers: &HeaderMap, query: Option<&str>, placeholder: &str) -> Result<SignedScope, AgentSignatureError> {
    // A session token is a live credential whatever else the request says: refused first.
    if headers.contains_key(SECURITY_TOKEN) {
        return Err(AgentSignatureError::SessionToken("X-Amz-Security-Token header"));
    }
    let in_query = query_signature(query)?;
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    match (authorization.next(), authorization.next(), in_query) {
        // Which one would the upstream read? Not a question the broker should have to answer.
        (Some(_), Some(_), _) => Err(AgentSignatureError::Ambiguous("more than one Authorization header".into())),
        (Some(_), None, Some(_)) => Err(AgentSignatureError::Ambiguous("both an Authorization header and a signature in the query".into())),
        (Some(value), None, None) => with_key_hint(parse_header(value, placeholder), &String::from_utf8_lossy(value.as_bytes())),
        (None, _, Some(QuerySignature::SigV4(params))) => {
            let credential = params[CREDENTIAL].clone().unwrap_or_default();
            with_key_hint(parse_presigned(params, placeholder), &credential)
        }
        (None, _, Some(QuerySignature::SigV2(key_id))) => Err(sigv2(&key_id, placeholder)),
        // An unsigned request proves nothing about what the client holds, and "unsigned" is where
        // every unknown spelling used to land. The SDKs and the CLI sign by default.
        (None, _, None) => Err(AgentSignatureError::Unsigned),
    }
}

/// A signature carried in the query string.
enum QuerySignature {
    /// The presigned-URL parameters, in [`PRESIGN`] order.
    SigV4([Option<String>; 6]),
    /// A SigV2 presigned URL's `AWSAccessKeyId`.
    SigV2(String),
}

/// The query's signature, if any: the presigned-URL parameters, each at most once and spelt
/// exactly as AWS spells it, or SigV2's `AWSAccessKeyId`. A session token in the query, in any
/// case, is refused.
fn query_signature(query: Option<&str>) -> Result<Option<QuerySignature>, AgentSignatureError> {
    let Some(query) = query else { return Ok(None) };
    let mut found: [Option<String>; 6] = Default::default();
    let mut sigv2_key = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name.eq_ignore_ascii_case(SECURITY_TOKEN) {
            return Err(AgentSignatureError::SessionToken("X-Amz-Security-Token query parameter"));
        }
        if name.eq_ignore_ascii_case("AWSAccessKeyId") {
            sigv2_key = Some(value.into_owned());
            continue;
        }
        let Some(i) = PRESIGN.iter().position(|p| p.eq_ignore_ascii_case(&name)) else { continue };
        // S3 reads these names case-sensitively; another spelling would be an ordinary parameter
        // to it but a signature to a lenient reader. Refuse rather than pick one reading.
        if name != PRESIGN[i] {
            return Err(AgentSignatureError::Ambiguous(format!("query parameter {name:?} is not spelt {}", PRESIGN[i])));
        }
        if found[i].replace(value.into_owned()).is_some() {
            return Err(AgentSignatureError::Ambiguous(format!("query parameter {} appears more than once", PRESIGN[i])));
        }
    }
    match (found.iter().any(Option::is_some), sigv2_key) {
        (true, Some(_)) => Err(AgentSignatureError::Ambiguous("both SigV4 (X-Amz-*) and SigV2 (AWSAccessKeyId) query parameters".into())),
        (true, None) => Ok(Some(QuerySignature::SigV4(found))),
        (false, Some(key_id)) => Ok(Some(QuerySignature::SigV2(key_id))),
        (false, None) => Ok(None),
    }
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`: one space after the algorithm,
/// the three components in the order every AWS SDK writes them, each after `,` or `, `.
fn parse_header(value: &HeaderValue, placeholder: &str) -> Result<SignedScope, AgentSignatureError> {
    let text = value.to_str().map_err(|_| malformed("the Authorization header contains bytes that are not visible ASCII"))?;
    let scheme_end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(text.len());
    let (scheme, rest) = text.split_at(scheme_end);
    match scheme {
        SIGV4 => {}
        // The broker signs SigV4 for one region; multi-region (SigV4a) requests are not scoped.
        SIGV4A => return Err(AgentSignatureError::Unsupported("SigV4a (AWS4-ECDSA-P256-SHA256)".into())),
        "AWS" => return Err(sigv2(rest.trim_start_matches(' ').split(':').next().unwrap_or_default(), placeholder)),
        "" => return Err(malformed("the Authorization header does not start with an algorithm")),
        other => return Err(AgentSignatureError::Unsupported(format!("{:?}", truncate(other, 40)))),
    }
    let rest = rest.strip_prefix(' ').ok_or_else(|| malformed("the algorithm must be followed by exactly one space"))?;
    let parts: Vec<&str> = rest.split(',').collect();
    let [credential, signed_headers, signature] = parts[..] else {
        return Err(malformed("expected exactly Credential=…, SignedHeaders=…, Signature=…"));
    };
    let credential = component(credential, "Credential=", false)?;
    let signed_headers = component(signed_headers, "SignedHeaders=", true)?;
    let signature = component(signature, "Signature=", true)?;
    let scope = parse_credential(credential, placeholder)?;
    check_signed_headers(signed_headers)?;
    check_signature(signature)?;
    Ok(scope)
}

/// One `Name=value` component; after a comma one optional space is allowed (SDKs write `, `).
fn component<'a>(part: &'a str, name: &str, after_comma: bool) -> Result<&'a str, AgentSignatureError> {
    let part = if after_comma { part.strip_prefix(' ').unwrap_or(part) } else { part };
    part.strip_prefix(name).ok_or_else(|| malformed(&format!("expected {name}… (exact spelling, no other whitespace)")))
}

fn parse_presigned(params: [Option<String>; 6], placeholder: &str) -> Result<SignedScope, AgentSignatureError> {
    let required = |i: usize| params[i].as_deref().ok_or_else(|| malformed(&format!("the presigned URL has no {}", PRESIGN[i])));
    match required(ALGORITHM)? {
        SIGV4 => {}
        SIGV4A => return Err(AgentSignatureError::Unsupported("SigV4a (AWS4-ECDSA-P256-SHA256)".into())),
        other => return Err(AgentSignatureError::Unsupported(format!("{:?}", truncate(other, 40)))),
    }
    let scope = parse_credential(required(CREDENTIAL)?, placeholder)?;
    let date = required(DATE)?;
    if !is_amz_date(date) || !date.starts_with(&scope.date) {
        return Err(malformed("X-Amz-Date must be yyyymmddThhmmssZ on the credential's date"));
    }
    if let Some(expires) = params[EXPIRES].as_deref() {
        let seconds = expires.bytes().all(|b| b.is_ascii_digit()).then(|| expires.parse::<u64>().ok()).flatten();
        if !seconds.is_some_and(|s| (1..=MAX_EXPIRES_SECONDS).contains(&s)) {
            return Err(malformed("X-Amz-Expires must be a number of seconds from 1 to 604800"));
        }
    }
    check_signed_headers(required(SIGNED_HEADERS)?)?;
    check_signature(required(SIGNATURE)?)?;
    Ok(scope)
}

/// `<key id>/<yyyymmdd>/<region>/<service>/aws4_request`, the key id exactly the placeholder.
fn parse_credential(credential: &str, placeholder: &str) -> Result<SignedScope, AgentSignatureError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed("Credential must be <access key id>/<yyyymmdd>/<region>/<service>/aws4_request"));
    };
    if key_id != placeholder {
        return Err(AgentSignatureError::NotPlaceholder(redact_key_id(key_id)));
    }
    if !is_yyyymmdd(date) {
        return Err(malformed("the credential's date must be yyyymmdd"));
    }
    if !is_name(region, 32) || !is_name(service, 64) {
        return Err(malformed("the credential's region and service must be lowercase names"));
    }
    if terminator != "aws4_request" {
        return Err(malformed("Credential must end in /aws4_request"));
    }
    Ok(SignedScope { date: date.into(), region: region.into(), service: service.into() })
}

/// SigV2 (`Authorization: AWS <key id>:<signature>`, or `AWSAccessKeyId=` in the query): a real
/// key is reported as one, the placeholder as an outdated scheme.
fn sigv2(key_id: &str, placeholder: &str) -> AgentSignatureError {
    if key_id.is_empty() || key_id == placeholder {
        AgentSignatureError::Unsupported("AWS signature version 2".into())
    } else {
        AgentSignatureError::NotPlaceholder(redact_key_id(key_id))
    }
}

/// A refused signature that still carries something shaped like an AWS access key id (`AKIA…`,
/// `ASIA…`) is reported as a real key: that is the incident, whatever else is wrong with it.
fn with_key_hint(result: Result<SignedScope, AgentSignatureError>, text: &str) -> Result<SignedScope, AgentSignatureError> {
    match result {
        Err(e) if !e.is_real_credential() => match text.split(|c: char| !c.is_ascii_alphanumeric()).find(|t| looks_like_access_key_id(t)) {
            Some(id) => Err(AgentSignatureError::NotPlaceholder(redact_key_id(id))),
            None => Err(e),
        },
        other => other,
    }
}

/// `AKIA`/`ASIA` and 16 more upper-case letters or digits: IAM user keys and STS session keys.
fn looks_like_access_key_id(token: &str) -> bool {
    token.len() == 20 && (token.starts_with("AKIA") || token.starts_with("ASIA")) && token.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn check_signed_headers(list: &str) -> Result<(), AgentSignatureError> {
    let token = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b));
    if list.split(';').all(token) {
        Ok(())
    } else {
        Err(malformed("SignedHeaders must be lowercase header names separated by ';'"))
    }
}

fn check_signature(signature: &str) -> Result<(), AgentSignatureError> {
    if signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(malformed("Signature must be 64 lowercase hex digits"))
    }
}

fn is_yyyymmdd(s: &str) -> bool {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (month, day) = (s[4..6].parse().unwrap_or(0u32), s[6..8].parse().unwrap_or(0u32));
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// `yyyymmddThhmmssZ`
fn is_amz_date(s: &str) -> bool {
    s.len() == 16 && s.is_ascii() && is_yyyymmdd(&s[..8]) && s.as_bytes()[8] == b'T' && s[9..15].bytes().all(|b| b.is_ascii_digit()) && s.ends_with('Z')
}

/// A region or signing name: `us-east-1`, `s3`, `execute-api`.
fn is_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn malformed(reason: &str) -> AgentSignatureError {
    AgentSignatureError::Malformed(reason.into())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Enough of a key id to recognise it in an incident, not enough to use it; only letters and
/// digits, so nothing the agent chose can shape the log line.
fn redact_key_id(id: &str) -> String {
    let shown: String = id.chars().take(4).map(|c| if c.is_ascii_alphanumeric() { c } else { '?' }).collect();
    format!("{shown}…")
}

#[cfg(test)]
#[path = "agent_signature_tests.rs"]
mod tests;
