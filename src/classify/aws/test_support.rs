//! Helpers for the table-driven tests: one row = one request as an SDK sends it.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{classify, resolve_endpoint, AwsRequest, CustomEndpoint};

/// The route account the tests classify with.
pub const ACCOUNT: &str = "111122223333";

/// moto and an S3 emulator on fixed local ports, as a test configuration would map them.
pub fn custom_endpoints() -> Vec<CustomEndpoint> {
    vec![
        CustomEndpoint { host: "127.0.0.1:5000".into(), service: Some("s3".into()), region: Some("us-east-1".into()) },
        CustomEndpoint { host: "127.0.0.1:5001".into(), service: Some("dynamodb".into()), region: Some("us-east-1".into()) },
        CustomEndpoint { host: "127.0.0.1:5002".into(), service: Some("sqs".into()), region: Some("us-east-1".into()) },
        CustomEndpoint { host: "localhost".into(), service: Some("s3".into()), region: Some("eu-west-1".into()) },
        // One emulator serving every service (LocalStack, moto's server): the signature decides.
        CustomEndpoint { host: "127.0.0.1:4566".into(), service: None, region: None },
        CustomEndpoint { host: "gateway.internal".into(), service: None, region: Some("eu-central-1".into()) },
    ]
}

/// One request as a test row describes it.
pub struct Row<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Path and optional `?query`, raw.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a str>,
}

/// Classify `row` and return `(action, resource)` pairs, or the error text.
pub fn run(row: &Row) -> Result<Vec<(String, String)>, String> {
    let endpoint = resolve_endpoint(row.host, &custom_endpoints()).ok_or_else(|| format!("host {} did not resolve", row.host))?;
    let method = Method::from_bytes(row.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    for (k, v) in row.headers {
        headers.append(HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?, HeaderValue::from_str(v).map_err(|e| e.to_string())?);
    }
    let (path, query) = match row.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (row.target, None),
    };
    let req = AwsRequest { method: &method, path, query, headers: &headers, body: row.body.map(str::as_bytes) };
    let scope = classify(&req, &endpoint, ACCOUNT).map_err(|e| e.reason)?;
    assert_eq!(scope.service, endpoint.service);
    assert_eq!(scope.region.as_deref(), Some(endpoint.region.as_str()));
    Ok(scope.permissions.into_iter().map(|p| (p.action, p.resource)).collect())
}

/// Check a table of rows that must classify to exactly the expected permissions.
pub fn check_ok(rows: &[(Row, &[(&str, &str)])]) {
    let mut failures = Vec::new();
    for (i, (row, expected)) in rows.iter().enumerate() {
        let expected: Vec<(String, String)> = expected.iter().map(|(a, r)| (a.to_string(), r.to_string())).collect();
        match run(row) {
            Ok(got) if got == expected => {}
            other => failures.push(format!("row {i}: {} {} {}\n   expected {expected:?}\n   got      {other:?}", row.method, row.host, row.target)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Check a table of rows that must be refused with an error containing the given text.
pub fn check_err(rows: &[(Row, &str)]) {
    let mut failures = Vec::new();
    for (i, (row, needle)) in rows.iter().enumerate() {
        match run(row) {
            Err(e) if e.contains(needle) && e.starts_with("unclassified AWS request") => {}
            Err(e) if e.contains(needle) && e.starts_with("configured AWS account") => {}
            other => failures.push(format!("row {i}: {} {} {}\n   expected error containing {needle:?}\n   got {other:?}", row.method, row.host, row.target)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Shorthand for a row.
pub fn row<'a>(method: &'a str, host: &'a str, target: &'a str, headers: &'a [(&'a str, &'a str)], body: Option<&'a str>) -> Row<'a> {
    Row { method, host, target, headers, body }
}
