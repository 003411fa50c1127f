//! The CLI's side of the broker API (`credential-broker grants …`): one HTTP request to the admin
//! listener with the bearer token from a file.

use std::path::Path;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::upstream::{full, Body};

/// A non-2xx answer from the broker API, with its JSON error.
#[derive(Debug, thiserror::Error)]
#[error("the broker answered {status}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

/// Call `method path` on the admin listener at `admin_url` (e.g. `http://127.0.0.1:15000`).
pub async fn call(admin_url: &str, token_file: &Path, method: http::Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<serde_json::Value> {
    let token = zeroize::Zeroizing::new(std::fs::read_to_string(token_file).with_context(|| format!("reading the admin token from {}", token_file.display()))?);
    let url = format!("{}{path}", admin_url.trim_end_matches('/'));
    let mut req = http::Request::builder().method(method).uri(&url).header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(body.map_or_else(|| full(""), |b| full(b.to_string()))).with_context(|| format!("bad admin URL {url}"))?;
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
        .await
        .with_context(|| format!("{url} did not answer within 60 s"))?
        .with_context(|| format!("cannot reach the broker API at {url}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.context("reading the broker's answer")?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if !status.is_success() {
        let message = value["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        return Err(ApiError { status: status.as_u16(), message }.into());
    }
    Ok(value)
}

/// A short table of grants for people; `--json` prints the API's answer instead.
pub fn grants_table(value: &serde_json::Value) -> String {
    let mut out = format!("{:<40} {:<24} {:<16} {:<12} {:<10} {:<22} {}\n", "ID", "KIND", "AGENT", "TENANT", "PROVIDER", "EXPIRES", "SCOPE");
    for g in value["grants"].as_array().into_iter().flatten() {
        let permissions: Vec<String> = g["scope"]["permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{} {}", p["action"].as_str().unwrap_or(""), p["resource"].as_str().unwrap_or("")))
            .collect();
        let scope = if permissions.is_empty() { g["credential_scope"].as_str().unwrap_or("").to_string() } else { permissions.join(", ") };
        let s = |k: &str| g[k].as_str().unwrap_or("").to_string();
        // A database session's grant names its database: `database_session:shop`.
        let kind = match g["database"].as_str() {
            Some(db) => format!("{}:{db}", s("kind")),
            None => s("kind"),
        };
        out.push_str(&format!(
            "{:<40} {:<24} {:<16} {:<12} {:<10} {:<22} {}\n",
            s("id"),
            kind,
            s("agent_id"),
            s("tenant"),
            s("provider"),
            s("expires_at"),
            scope
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::grants_table;

    #[test]
    fn the_grants_table_shows_each_grants_kind_and_a_sessions_database() {
        let value = serde_json::json!({"grants": [
            {"id": "lease-1", "kind": "cached_lease", "agent_id": "agent-a", "tenant": "acme", "provider": "idp", "expires_at": "2026-12-01T01:00:00Z",
             "scope": {"service": "github", "permissions": [{"action": "http:GET", "resource": "https://api.github.test/repos"}]}, "credential_scope": "repo.read"},
            {"id": "lease-2", "kind": "database_session", "database": "shop", "session_id": "pgs-1", "agent_id": "agent-b", "tenant": "acme", "provider": "pg",
             "expires_at": "2026-12-01T01:00:00Z", "scope": {"service": "postgres", "permissions": [{"action": "postgres:CONNECT", "resource": "postgres://127.0.0.1/shop"}]},
             "credential_scope": "cb_agent_b"},
        ]});
        let table = grants_table(&value);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].contains("KIND") && lines[0].contains("AGENT"), "{table}");
        assert!(
            lines[1].starts_with("lease-1") && lines[1].contains(" cached_lease ") && lines[1].contains("http:GET https://api.github.test/repos"),
            "{table}"
        );
        assert!(
            lines[2].contains(" database_session:shop ") && lines[2].contains(" agent-b ") && lines[2].contains("postgres:CONNECT postgres://127.0.0.1/shop"),
            "{table}"
        );
    }
}
