//! SigV4 re-signing: the agent's request arrives signed with the placeholder key (checked by
//! [`check_agent_signature`]); the broker drops that signature and signs the request with the
//! session credentials it minted. Signing is the very last change to the request: nothing may alter
//! a signed header afterwards.

mod agent_signature;

pub use agent_signature::{check_agent_signature, AgentSignatureError, SignedScope};

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode};
use aws_sigv4::sign::v4;
use http::HeaderMap;

use crate::providers::Credential;

/// Headers that carry the agent's signature; they are replaced, never forwarded. (A security token
/// is refused before this point; removing it too keeps this function safe on its own.)
const AGENT_SIGNATURE_HEADERS: [&str; 3] = ["authorization", "x-amz-date", "x-amz-security-token"];
/// Query parameters of a presigned URL; they are dropped and the request is signed in headers.
const PRESIGN_PARAMS: [&str; 7] =
    ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"];

/// How the payload is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The whole body, buffered (JSON and Query protocols, S3 `DeleteObjects`).
    Buffered(&'a [u8]),
    /// S3 only: the client's own `x-amz-content-sha256` value, kept as is, so the body streams
    /// through untouched (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, or a hex hash
    /// S3 itself checks against the body).
    S3ClientDeclared(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    #[error(
        "x-amz-content-sha256 {0:?} means per-chunk signatures chained to the agent's signature, which the broker cannot re-sign; \
         configure the client for unsigned payloads over HTTPS (the AWS SDK and CLI default)"
    )]
    SignedChunks(String),
    #[error("the request cannot be signed: {0}")]
    Signing(String),
    #[error("the minted credential is not an AWS session")]
    NotAwsCredential,
}

/// For S3, the payload mode the client chose; signed-chunk modes cannot be re-signed.
pub fn s3_client_payload(headers: &HeaderMap) -> Result<Payload<'static>, SigV4Error> {
    let declared = headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).unwrap_or("UNSIGNED-PAYLOAD");
    if declared.starts_with("STREAMING-AWS4-") {
        return Err(SigV4Error::SignedChunks(declared.to_string()));
    }
    Ok(Payload::S3ClientDeclared(declared.to_string()))
}

/// Remove the agent's signature from headers and query; returns the new query string.
pub fn strip_agent_signature(headers: &mut HeaderMap, query: Option<&str>) -> Option<String> {
    for h in AGENT_SIGNATURE_HEADERS {
        headers.remove(h);
    }
    let query = query?;
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !PRESIGN_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.len() == url::form_urlencoded::parse(query.as_bytes()).count() {
        return Some(query.to_string()); // untouched: keep the client's exact encoding
    }
    if kept.is_empty() {
        return None;
    }
    Some(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish())
}

/// Sign `req` in place for `service` in `region` with the minted session credentials.
pub fn sign_request<B>(req: &mut http::Request<B>, credential: &Credential, service: &str, region: &str, payload: &Payload<'_>) -> Result<(), SigV4Error> {
    let Credential::AwsSession { access_key_id, secret_access_key, session_token } = credential else {
        return Err(SigV4Error::NotAwsCredential);
    };
    let identity = aws_credential_types::Credentials::new(
        access_key_id.expose(),
        secret_access_key.expose(),
        Some(session_token.expose().to_string()),
        None,
        "credential-broker",
    )
    .into();
    let mut settings = SigningSettings::default();
    // `Expect: 100-continue` is hop-by-hop in practice: proxies and servers (botocore-based ones
    // included) drop or answer it, so a signature over it does not verify. Never sign it.
    if let Some(excluded) = settings.excluded_headers.as_mut() {
        excluded.push(std::borrow::Cow::Borrowed("expect"));
    }
    if service == "s3" {
        // S3 signs the path as sent (no double encoding, no dot-segment normalisation) and wants
        // the payload hash in x-amz-content-sha256.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| SigV4Error::Signing(e.to_string()))?
        .into();
    let body = match payload {
        Payload::Buffered(bytes) => SignableBody::Bytes(bytes),
        Payload::S3ClientDeclared(v) => SignableBody::Precomputed(v.clone()),
    };
    let uri = req.uri().to_string();
    let headers: Vec<(&str, &str)> = req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect();
    let signable = SignableRequest::new(req.method().as_str(), uri.as_str(), headers.into_iter(), body).map_err(|e| SigV4Error::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| SigV4Error::Signing(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Secret;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap())).collect()
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=credential-broker-placeholder/20261130/us-east-1/s3/aws4_request, \
                        SignedHeaders=host;x-amz-date, Signature=abc";

    #[test]
    fn signed_chunk_uploads_are_refused_other_payload_modes_kept() {
        let h = headers(&[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]);
        assert!(matches!(s3_client_payload(&h), Err(SigV4Error::SignedChunks(_))));
        let h = headers(&[("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")]);
        assert_eq!(s3_client_payload(&h).unwrap(), Payload::S3ClientDeclared("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into()));
        assert_eq!(s3_client_payload(&HeaderMap::new()).unwrap(), Payload::S3ClientDeclared("UNSIGNED-PAYLOAD".into()));
    }

    #[test]
    fn the_agents_signature_is_removed_and_ours_added() {
        let mut req = http::Request::builder()
            .method("GET")
            .uri("https://bucket-a.s3.us-east-1.amazonaws.com/file.txt?X-Amz-Signature=ff&versionId=3")
            .header("authorization", AUTH)
            .header("x-amz-date", "20200101T000000Z")
            .header("x-amz-security-token", "agent-token")
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(())
            .unwrap();
        let original_query = req.uri().query().map(str::to_string);
        let query = strip_agent_signature(req.headers_mut(), original_query.as_deref());
        assert_eq!(query.as_deref(), Some("versionId=3"));
        *req.uri_mut() = "https://bucket-a.s3.us-east-1.amazonaws.com/file.txt?versionId=3".parse().unwrap();
        let credential = Credential::AwsSession {
            access_key_id: Secret::new("ASIAMINTEDKEY0000001"),
            secret_access_key: Secret::new("minted-secret"),
            session_token: Secret::new("minted-session-token"),
        };
        sign_request(&mut req, &credential, "s3", "us-east-1", &Payload::S3ClientDeclared("UNSIGNED-PAYLOAD".into())).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAMINTEDKEY0000001/"), "{auth}");
        assert!(auth.contains("/us-east-1/s3/aws4_request"));
        assert_eq!(req.headers()["x-amz-security-token"], "minted-session-token");
        assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_ne!(req.headers()["x-amz-date"], "20200101T000000Z");
    }
}
