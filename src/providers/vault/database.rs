//! The database secrets engine: `GET <mount>/creds/<role>` makes a user with the role's creation
//! statements and a Vault lease; `sys/leases/renew` extends the lease up to the role's `max_ttl`;
//! `sys/leases/revoke` runs the role's revocation statements (synchronously) and ends the lease.
//!
//! vaultrs' `database::role::creds` returns only `{username, password}`: the lease id and duration
//! are in the envelope it strips, so this read goes through [`call`] on vaultrs' own client.

use std::time::Duration;

use serde::Deserialize;

use super::super::{ProviderError, Secret};
use super::auth::Session;
use super::client::call;

/// A user Vault made, and its lease.
pub(super) struct Creds {
    pub lease_id: String,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub username: String,
    pub password: Secret,
}

#[derive(Deserialize)]
struct CredsAnswer {
    lease_id: String,
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    data: CredsData,
}

#[derive(Deserialize)]
struct CredsData {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RenewAnswer {
    lease_duration: u64,
}

pub(super) async fn creds(session: &Session, mount: &str, role: &str) -> Result<Creds, ProviderError> {
    let path = format!("{mount}/creds/{role}");
    let what = format!("reading {path}");
    let answer: CredsAnswer = session
        .with_token(|client| {
            let (path, what) = (path.clone(), what.clone());
            async move { call(&client, reqwest::Method::GET, &path, None, &what).await }
        })
        .await?;
    if answer.lease_id.is_empty() {
        // Without a lease the user could be neither renewed nor revoked.
        return Err(ProviderError::permanent(format!("{what}: vault returned no lease id")));
    }
    Ok(Creds {
        lease_id: answer.lease_id,
        lease_duration: Duration::from_secs(answer.lease_duration),
        renewable: answer.renewable,
        username: answer.data.username,
        password: Secret::new(answer.data.password),
    })
}

/// Asks for `increment` more; returns the lease's remaining duration as Vault set it, which stops
/// growing once the role's `max_ttl` is reached.
pub(super) async fn renew(session: &Session, lease_id: &str, increment: Duration) -> Result<Duration, ProviderError> {
    let body = serde_json::json!({"lease_id": lease_id, "increment": increment.as_secs()});
    let answer: RenewAnswer = session
        .with_token(|client| {
            let body = body.clone();
            async move { call(&client, reqwest::Method::PUT, "sys/leases/renew", Some(body), "renewing a vault lease").await }
        })
        .await?;
    Ok(Duration::from_secs(answer.lease_duration))
}

/// Ends the lease now: Vault runs the role's revocation statements before it answers.
pub(super) async fn revoke(session: &Session, lease_id: &str) -> Result<(), ProviderError> {
    let body = serde_json::json!({"lease_id": lease_id});
    session
        .with_token(|client| {
            let body = body.clone();
            async move { call::<serde_json::Value>(&client, reqwest::Method::PUT, "sys/leases/revoke", Some(body), "revoking a vault lease").await }
        })
        .await
        .map(drop)
}
