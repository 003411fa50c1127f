//! The broker's own Vault token: obtained by the configured method, kept alive, and replaced.
//!
//! Vault revokes every lease a token created when that token expires or is revoked, so the
//! database users minted under a token live no longer than it. The token is therefore **renewed**
//! (`auth/token/renew-self`) at 80% of its time to live, by a background task too (a session
//! renewing its lease once an hour must not find its user gone with a ten-minute token), for as
//! long as Vault extends it. When Vault no longer does (the auth role's `token_max_ttl`), or the
//! token itself is no longer valid, the broker **logs in again**; leases made under the old token
//! still end with it.
//!
//! A 403 on a call is not taken to mean the token is gone: the token looks itself up
//! (`auth/token/lookup-self`). If it still can, the 403 is a real denial (the broker's Vault
//! policy lacks the path) and permanent, with no new login (an AppRole login spends a `secret_id`
//! use and mints a token). Only a token that can no longer look itself up (revoked, expired) is
//! replaced, and such forced logins happen at most once per [`FORCED_LOGIN_INTERVAL`].
//!
//! `jwt` and `kubernetes` are one code path (`POST auth/<mount>/login {role, jwt}`); only the
//! server side differs (signature keys vs. a TokenReview). The token file is read at each login,
//! since a projected service-account token is rotated by the kubelet. A `token_file` is re-read
//! every minute and after a 403 for a token that is no longer valid, so a token rewritten by
//! Vault Agent takes effect; a file briefly unreadable or empty (being rewritten) keeps the
//! current token.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify};
use vaultrs::client::{Client, VaultClient};
use zeroize::Zeroizing;

use super::super::ProviderError;
use super::client::{call, from_vaultrs, CallError};
use crate::config::VaultAuth;

/// A token read from a file is re-read this often, so a rewritten file (Vault Agent) takes effect.
const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(60);
/// How often the keeper looks when there is nothing due (no token yet, or one that never expires).
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// At most one login forced by a refused token per this interval; callers wait for it.
const FORCED_LOGIN_INTERVAL: Duration = Duration::from_secs(3);

/// The current token (in a vaultrs client), and when to act on it.
pub(super) struct Session {
    auth: VaultAuth,
    /// No token: logins go through this one.
    anonymous: VaultClient,
    state: Mutex<State>,
    /// Wakes the keeper after a login, so it learns of the new token's life.
    wake: Arc<Notify>,
}

struct State {
    /// Bumped at each login; a refused token invalidates only the login it came from.
    generation: u64,
    /// The client carrying the current token; None before the first login or once it is invalid.
    current: Option<Arc<VaultClient>>,
    /// The current token itself, to tell whether a token file changed.
    token: Zeroizing<String>,
    /// When the token expires (None: never, e.g. a root token, or unknown).
    expires_at: Option<Instant>,
    renewable: bool,
    /// Renew the token (or log in again) from here on: 80% of its life (None: it never expires).
    renew_at: Option<Instant>,
    /// A token file: look whether it changed from here on.
    file_check_at: Option<Instant>,
    /// When a refused token last forced a login (rate limit).
    forced_at: Option<Instant>,
}

impl State {
    fn check_at(&self) -> Option<Instant> {
        [self.renew_at, self.file_check_at].into_iter().flatten().min()
    }
}

/// What a login or renewal says about a token's life.
struct Life {
    ttl: Option<Duration>,
    renewable: bool,
}

impl Session {
    /// The session, and a task that keeps its token alive (while a Tokio runtime is there; the
    /// task ends when the session is dropped).
    pub fn new(auth: VaultAuth, anonymous: VaultClient) -> Arc<Session> {
        let state = State {
            generation: 0,
            current: None,
            token: Zeroizing::new(String::new()),
            expires_at: None,
            renewable: false,
            renew_at: None,
            file_check_at: None,
            forced_at: None,
        };
        let wake = Arc::new(Notify::new());
        let session = Arc::new(Session { auth, anonymous, state: Mutex::new(state), wake: wake.clone() });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(keep_alive(Arc::downgrade(&session), wake));
        }
        session
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

    /// A client with a current token (renewed or obtained first when due), and which login it
    /// came from. Concurrent callers wait for one renewal or login.
    pub async fn authed(&self) -> Result<(Arc<VaultClient>, u64), ProviderError> {
        let mut state = self.state.lock().await;
        let due = state.check_at().is_some_and(|at| Instant::now() >= at);
        if let (Some(client), false) = (&state.current, due) {
            return Ok((client.clone(), state.generation));
        }
        if let Some(client) = state.current.clone() {
            if self.renewed(&mut state, &client).await {
                return Ok((client, state.generation));
            }
        }
        state.current = None;
        let (token, life) = self.login().await?;
        let mut client = with_same_transport(&self.anonymous);
        client.set_token(token.as_str());
        let client = Arc::new(client);
        state.generation += 1;
        state.current = Some(client.clone());
        state.token = token;
        state.renewable = life.renewable;
        state.expires_at = life.ttl.filter(|d| !d.is_zero()).map(|d| Instant::now() + d);
        state.renew_at = renew_at(&life);
        state.file_check_at = self.file_check_at();
        self.wake.notify_one();
        tracing::debug!(method = self.auth.method(), ttl_s = life.ttl.map(|d| d.as_secs()), renewable = life.renewable, "vault login");
        Ok((client, state.generation))
    }

    /// A token file is looked at again every minute.
    fn file_check_at(&self) -> Option<Instant> {
        matches!(self.auth, VaultAuth::Token { .. }).then(|| Instant::now() + TOKEN_FILE_RECHECK)
    }

    /// Keeps the current token when that is right: a token file that still holds it and whose
    /// token is not near expiry, or a token Vault extends (`renew-self`). False: log in again.
    async fn renewed(&self, state: &mut State, client: &VaultClient) -> bool {
        if let VaultAuth::Token { token_file } = &self.auth {
            match read_file("auth.token.token_file", token_file) {
                Ok(token) if token == state.token => state.file_check_at = self.file_check_at(),
                Ok(_) => return false,
                Err(e) => {
                    // Being rewritten (Vault Agent), or briefly gone: the token in hand is still
                    // good; look again at the next check. The message names the file, not the token.
                    tracing::warn!(error = %e, "the broker's vault token file could not be read; keeping the current token");
                    state.file_check_at = self.file_check_at();
                }
            }
        }
        if state.renew_at.is_none_or(|at| Instant::now() < at) {
            // Only the token file's periodic look was due.
            return true;
        }
        if !state.renewable {
            return false;
        }
        match vaultrs::token::renew_self(client, None).await {
            Ok(info) => {
                let ttl = Duration::from_secs(info.lease_duration);
                let expires_at = Instant::now() + ttl;
                // At the auth role's max TTL Vault answers, but the expiry stops moving.
                if state.expires_at.is_some_and(|old| expires_at <= old + Duration::from_secs(1)) {
                    tracing::info!(method = self.auth.method(), "the broker's vault token is at its max TTL; logging in again");
                    return false;
                }
                state.expires_at = Some(expires_at);
                state.renewable = info.renewable;
                state.renew_at = renew_at(&Life { ttl: Some(ttl), renewable: info.renewable });
                tracing::debug!(method = self.auth.method(), ttl_s = ttl.as_secs(), "vault token renewed");
                true
            }
            Err(e) => {
                let e = from_vaultrs("renewing the broker's vault token", e).error;
                // Vault unreachable for a moment: the token (and its leases) may well still live;
                // keep it and try again shortly rather than abandon it.
                if e.retryable && state.expires_at.is_some_and(|at| Instant::now() + Duration::from_secs(5) < at) {
                    tracing::warn!(error = %e, "renewing the broker's vault token failed; retrying in 5 s");
                    state.renew_at = Some(Instant::now() + Duration::from_secs(5));
                    return true;
                }
                tracing::info!(error = %e, "logging in again");
                false
            }
        }
    }

    /// The token of `generation` is no longer valid: the next call logs in again. Another caller
    /// may have done this already (then nothing happens: one login serves them all); a forced
    /// login less than [`FORCED_LOGIN_INTERVAL`] after the previous one waits (holding the state,
    /// so concurrent callers wait with it).
    async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation != generation || state.current.is_none() {
            return;
        }
        if let Some(wait) = state.forced_at.map(|at| (at + FORCED_LOGIN_INTERVAL).saturating_duration_since(Instant::now())) {
            if !wait.is_zero() {
                tracing::info!(wait_ms = wait.as_millis() as u64, "the broker's vault token was refused again soon after a login; waiting before the next");
                tokio::time::sleep(wait).await;
            }
        }
        state.forced_at = Some(Instant::now());
        state.current = None;
    }

    /// Whether `client`'s token is still valid: it can look itself up (`auth/token/lookup-self`,
    /// in Vault's default policy). Vault answers 403 for a revoked or expired token. Vault not
    /// answering (or 5xx): the retryable error, since nothing can be concluded.
    async fn token_valid(&self, client: &VaultClient) -> Result<bool, ProviderError> {
        match call::<serde_json::Value>(client, reqwest::Method::GET, "auth/token/lookup-self", None, "looking up the broker's vault token").await {
            Ok(_) => Ok(true),
            Err(e) if e.error.retryable => Err(e.error),
            Err(e) => {
                tracing::info!(error = %e.error, "the broker's vault token is no longer valid");
                Ok(false)
            }
        }
    }

    /// When the keeper should look next, if there is a token to keep.
    async fn next_check(&self) -> Option<Option<Instant>> {
        let state = self.state.lock().await;
        state.current.as_ref().map(|_| state.check_at())
    }

    /// Runs `op` with a current token. On 403 the token looks itself up: still valid, the 403 is
    /// a denial (permanent, no new login); no longer valid (revoked, expired early), the provider
    /// logs in once more (see [`Session::invalidate`]) and runs `op` again, where a 403 is a denial.
    pub async fn with_token<T, F, Fut>(&self, mut op: F) -> Result<T, ProviderError>
    where
        F: FnMut(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (client, generation) = self.authed().await?;
        match op(client.clone()).await {
            Err(e) if e.forbidden() => {
                if self.token_valid(&client).await? {
                    return Err(denied(e));
                }
                tracing::info!(error = %e.error, "vault answered 403 and the broker's token is no longer valid; logging in again");
                self.invalidate(generation).await;
                let (client, _) = self.authed().await?;
                op(client).await.map_err(|e| if e.forbidden() { denied(e) } else { e.error })
            }
            other => other.map_err(ProviderError::from),
        }
    }

    /// One login: the token and its life.
    async fn login(&self) -> Result<(Zeroizing<String>, Life), ProviderError> {
        let client = &self.anonymous;
        let info = match &self.auth {
            VaultAuth::Token { token_file } => {
                let token = read_file("auth.token.token_file", token_file)?;
                let life = self.look_up(&token).await;
                return Ok((token, life));
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
        Ok((Zeroizing::new(info.client_token), Life { ttl: Some(Duration::from_secs(info.lease_duration)), renewable: info.renewable }))
    }

    /// A token file's token: its remaining life from `auth/token/lookup-self` (in the default
    /// policy). Unknown when the lookup fails; the token is then used until Vault answers 403.
    async fn look_up(&self, token: &str) -> Life {
        #[derive(serde::Deserialize)]
        struct Answer {
            data: Data,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            ttl: u64,
            #[serde(default)]
            renewable: bool,
        }
        let mut client = with_same_transport(&self.anonymous);
        client.set_token(token);
        match call::<Answer>(&client, reqwest::Method::GET, "auth/token/lookup-self", None, "looking up the broker's vault token").await {
            Ok(a) => Life { ttl: Some(Duration::from_secs(a.data.ttl)), renewable: a.data.renewable },
            Err(e) => {
                tracing::debug!(error = %e.error, "the broker's vault token could not look itself up");
                Life { ttl: None, renewable: false }
            }
        }
    }
}

/// A 403 for a valid token: the broker's Vault policy does not allow the call.
fn denied(e: CallError) -> ProviderError {
    ProviderError::permanent(format!("Vault denied the broker's token ({}): check the broker's Vault policy", e.error.message))
}

/// 80% into a token's life (at least a second away); None when it does not expire.
fn renew_at(life: &Life) -> Option<Instant> {
    life.ttl.filter(|d| !d.is_zero()).map(|d| Instant::now() + d.mul_f64(0.8).max(Duration::from_secs(1)))
}

/// Renews (or replaces) the session's token when due, between mints too; ends with the session.
async fn keep_alive(session: Weak<Session>, wake: Arc<Notify>) {
    loop {
        let next = match session.upgrade() {
            Some(s) => s.next_check().await,
            None => return,
        };
        let now = Instant::now();
        let at = match next {
            Some(Some(at)) => at.max(now + Duration::from_millis(200)),
            _ => now + IDLE_CHECK,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = wake.notified() => continue,
        }
        let Some(s) = session.upgrade() else { return };
        if matches!(s.next_check().await, Some(Some(at)) if Instant::now() >= at) {
            if let Err(e) = s.authed().await {
                tracing::warn!(method = s.auth.method(), error = %e, "keeping the broker's vault token alive failed; retrying on the next use");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
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
