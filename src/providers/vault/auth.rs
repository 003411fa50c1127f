//! The broker's own Vault token: obtained by the configured method, kept in the vaultrs client,
//! and obtained again when it nears its expiry or Vault answers 403.
//!
//! `jwt` and `kubernetes` are one code path (`POST auth/<mount>/login {role, jwt}`); only the
//! server side differs (signature keys vs. a TokenReview). The token file is read at each login,
//! since a projected service-account token is rotated by the kubelet.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use vaultrs::client::{Client, VaultClient};
use zeroize::Zeroizing;

use super::super::ProviderError;
use super::client::{from_vaultrs, CallError};
use crate::config::VaultAuth;

/// A token read from a file is re-read this often, so a rewritten file (Vault Agent) takes effect.
const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(60);

/// The current token (in a vaultrs client), and when to replace it.
pub(super) struct Session {
    auth: VaultAuth,
    /// No token: logins go through this one.
    anonymous: VaultClient,
    state: Mutex<State>,
}

struct State {
    /// Bumped at each login; a 403 invalidates only the token it was answered for.
    generation: u64,
    /// The client carrying the current token; None before the first login or after a 403.
    current: Option<Arc<VaultClient>>,
    /// Log in again from here on (None: the token does not expire, e.g. a root token).
    refresh_at: Option<Instant>,
}

impl Session {
    pub fn new(auth: VaultAuth, anonymous: VaultClient) -> Session {
        Session { auth, anonymous, state: Mutex::new(State { generation: 0, current: None, refresh_at: None }) }
    }

    /// Reads the configured credential file now, so a missing or empty one stops start-up.
    pub fn check_files(&self) -> Result<(), ProviderError> {
        match &self.auth {
            VaultAuth::Token { token_file } => read_file("auth.token.token_file", token_file).map(drop),
            VaultAuth::AppRole { secret_id_file, .. } => read_file("auth.approle.secret_id_file", secret_id_file).map(drop),
            VaultAuth::Jwt { jwt_file, .. } => read_file("auth.jwt.jwt_file", jwt_file).map(drop),
            VaultAuth::Kubernetes { jwt_file, .. } => read_file("auth.kubernetes.jwt_file", jwt_file).map(drop),
        }
    }

    /// A client with a token that is not near its expiry (logging in first when needed), and
    /// which login it came from. Logins are serialised: concurrent callers wait for one.
    pub async fn authed(&self) -> Result<(Arc<VaultClient>, u64), ProviderError> {
        let mut state = self.state.lock().await;
        let fresh = state.refresh_at.is_none_or(|at| Instant::now() < at);
        if let (Some(client), true) = (&state.current, fresh) {
            return Ok((client.clone(), state.generation));
        }
        state.current = None;
        let (token, lifetime) = self.login().await?;
        let mut client = with_same_transport(&self.anonymous);
        client.set_token(token.as_str());
        let client = Arc::new(client);
        state.generation += 1;
        state.current = Some(client.clone());
        // Log in again at 80% of the token's life; 0 means it does not expire.
        state.refresh_at = match (&self.auth, lifetime) {
            (VaultAuth::Token { .. }, _) => Some(Instant::now() + TOKEN_FILE_RECHECK),
            (_, Some(d)) if !d.is_zero() => Some(Instant::now() + d.mul_f64(0.8)),
            _ => None,
        };
        tracing::debug!(method = self.auth.method(), lifetime_s = lifetime.map(|d| d.as_secs()), "vault login");
        Ok((client, state.generation))
    }

    /// Vault refused the token of `generation` (403): the next call logs in again.
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation {
            state.current = None;
        }
    }

    /// Runs `op` with a current token; on 403 logs in once more and runs it again, since a
    /// token can be revoked or expire early. A second 403 is a real denial (permanent).
    pub async fn with_token<T, F, Fut>(&self, mut op: F) -> Result<T, ProviderError>
    where
        F: FnMut(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (client, generation) = self.authed().await?;
        match op(client).await {
            Err(e) if e.forbidden() => {
                tracing::info!(error = %e.error, "vault answered 403; logging in again");
                self.invalidate(generation).await;
                let (client, _) = self.authed().await?;
                op(client).await.map_err(ProviderError::from)
            }
            other => other.map_err(ProviderError::from),
        }
    }

    /// One login: the token and how long it lives (None: unknown).
    async fn login(&self) -> Result<(Zeroizing<String>, Option<Duration>), ProviderError> {
        let client = &self.anonymous;
        let info = match &self.auth {
            VaultAuth::Token { token_file } => {
                let token = read_file("auth.token.token_file", token_file)?;
                return Ok((token, None));
            }
            VaultAuth::AppRole { mount, role_id, secret_id_file } => {
                let secret_id = read_file("auth.approle.secret_id_file", secret_id_file)?;
                vaultrs::auth::approle::login(client, mount, role_id, &secret_id)
                    .await
                    .map_err(|e| from_vaultrs(&format!("approle login at auth/{mount}"), e))?
            }
            VaultAuth::Jwt { mount, role, jwt_file } => {
                let jwt = read_file("auth.jwt.jwt_file", jwt_file)?;
                vaultrs::auth::oidc::login(client, mount, &jwt, Some(role.clone()))
                    .await
                    .map_err(|e| from_vaultrs(&format!("jwt login at auth/{mount} as role {role}"), e))?
            }
            VaultAuth::Kubernetes { mount, role, jwt_file } => {
                let jwt = read_file("auth.kubernetes.jwt_file", jwt_file)?;
                vaultrs::auth::kubernetes::login(client, mount, role, &jwt)
                    .await
                    .map_err(|e| from_vaultrs(&format!("kubernetes login at auth/{mount} as role {role}"), e))?
            }
        };
        Ok((Zeroizing::new(info.client_token), Some(Duration::from_secs(info.lease_duration))))
    }
}

/// A credential file's content without the trailing newline; refuses an empty file and one that
/// could not travel in a header.
fn read_file(key: &str, path: &Path) -> Result<Zeroizing<String>, ProviderError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| ProviderError::permanent(format!("{key} {}: {e}", path.display())))?);
    let value = Zeroizing::new(text.trim().to_string());
    if value.is_empty() {
        return Err(ProviderError::permanent(format!("{key} {} is empty", path.display())));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProviderError::permanent(format!("{key} {} holds characters that are not printable ASCII", path.display())));
    }
    Ok(value)
}

/// A second client on the same connection pool and TLS settings (vaultrs' client is not `Clone`).
fn with_same_transport(client: &VaultClient) -> VaultClient {
    VaultClient {
        http: rustify::clients::reqwest::Client::new(&client.http.base, client.http.http.clone()),
        middle: client.middle.clone(),
        settings: client.settings.clone(),
    }
}
