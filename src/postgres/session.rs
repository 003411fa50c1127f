//! One agent connection: startup (the agent identified per `identity.mode`), a just-in-time user minted for the session,
//! the upstream login, then a relay that checks every `Query` and `Parse` against policy.
//!
//! A denied statement is not answered out of band (that would race the server's answers to
//! messages already forwarded): it is replaced by a statement that fails at parse time with a
//! unique marker, and the server's error for it is swapped for the broker's 42501 on the way back.
//! So the agent sees the error in order, the transaction state is the server's own, and
//! extended-protocol error handling (skip to `Sync`) is the server's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::tls::UpstreamStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use super::registry::Registration;
use super::wire::{self, read_message, read_startup, WireError};
use super::{settings, statements, upstream, CancelKeys, DatabaseListener};
use crate::audit::record::rfc3339;
use crate::audit::{AuditEvent, AuditRecord};
use crate::broker::Broker;
use crate::classify::postgres::classify_setting;
use crate::classify::{Permission, Scope};
use crate::config::RetryConfig;
use crate::identity::IdentityError;
use crate::providers::retry::with_retries;
use crate::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest, SharedProvider};

/// Startup parameters passed on to the server. Everything else is dropped (`options` could set
/// `role` or `search_path`, `replication` would open a replication session); a session-changing
/// setting asked for anywhere in the startup refuses it (see [`settings`]).
const FORWARDED_PARAMETERS: &[&str] = &["application_name", "client_encoding", "DateStyle", "TimeZone", "IntervalStyle", "extra_float_digits"];

/// How the agent of a connection is known, per `identity.mode`.
enum Proof {
    /// Sidecar mode: the configured identity (no expiry); or the verified client certificate
    /// (mtls mode), which expires at its `notAfter`.
    Known(Arc<Identity>, Option<ProofExpiry>),
    /// mtls mode, and the TLS connection carries no usable client certificate.
    Refused(IdentityError),
    /// jwt mode: the password is the agent's JWT.
    Token,
}

/// What proved the agent's identity to a session that must end with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProofKind {
    /// The JWT given as the password (jwt mode).
    Token,
    /// The TLS client certificate (mtls mode).
    Certificate,
}

/// When the proof of a session's agent runs out: the session ends then (a session must not
/// outlive the proof of who its agent is, as every HTTP request re-checks it).
#[derive(Debug, Clone, Copy)]
struct ProofExpiry {
    at: SystemTime,
    kind: ProofKind,
}

/// Serve one agent connection to the end: accepted on the database's listener, or redirected to
/// the transparent listener and replayed from its first byte. With `identity.mode: mtls` the
/// connection must start with `SSLRequest` and a TLS handshake naming the agent by certificate.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(broker: Arc<Broker>, db: Arc<DatabaseListener>, keys: CancelKeys, mut agent: S) {
    let session_id = format!("pgs-{}", uuid::Uuid::now_v7().simple());
    let deadline = StartupDeadline::from_now(broker.config.limits.header_read_timeout);
    if let Some(identity) = broker.identities.sidecar() {
        return serve_as(broker, db, keys, agent, session_id, Proof::Known(identity, None), deadline).await;
    }
    if broker.identities.takes_tokens() {
        return serve_as(broker, db, keys, agent, session_id, Proof::Token, deadline).await;
    }
    let Some(mtls) = broker.identities.mtls() else { return };
    loop {
        let packet = match deadline.read(read_startup(&mut agent)).await {
            Ok(p) => p,
            Err(_) => return,
        };
        match packet.code {
            wire::GSSENC_REQUEST => {
                if agent.write_all(b"N").await.is_err() {
                    return;
                }
            }
            wire::CANCEL_REQUEST => return forward_cancel(&db, &keys, &packet.body).await,
            wire::SSL_REQUEST => {
                if agent.write_all(b"S").await.is_err() || agent.flush().await.is_err() {
                    return;
                }
                let (tls, certified) = match mtls.accept_postgres(agent, deadline.remaining()).await {
                    Ok(accepted) => accepted,
                    Err(reason) => {
                        // A certificate that does not verify fails the handshake itself: no
                        // channel is left to say more than the TLS alert.
                        let e = IdentityError::Invalid(format!("client certificate refused: {reason}"));
                        crate::pipeline::audit_identity_refusal(&broker, &session_id, Some(&format!("database:{}", db.name)), &e);
                        tracing::warn!(session = %session_id, database = %db.name, %reason, "refused a postgres connection without a valid client certificate");
                        return;
                    }
                };
                let proof = match certified {
                    Ok(agent) => {
                        let expiry = ProofExpiry { at: agent.not_after, kind: ProofKind::Certificate };
                        Proof::Known(broker.identities.for_certificate(agent), Some(expiry))
                    }
                    Err(reason) if no_client_certificate(&tls) => Proof::Refused(IdentityError::Missing(format!(
                        "this listener requires a client certificate naming the agent (sslmode=require sslcert=… sslkey=…): {reason}"
                    ))),
                    // Verified, but it names no agent (no or several SPIFFE IDs, another trust domain).
                    Err(reason) => Proof::Refused(IdentityError::Invalid(format!("client certificate refused: {reason}"))),
                };
                return serve_as(broker, db, keys, tls, session_id, proof, deadline).await;
            }
            _ => {
                // A cleartext startup: nobody is named. Refused like a missing certificate.
                let e =
                    IdentityError::Missing("this listener requires TLS with a client certificate naming the agent (sslmode=require sslcert=… sslkey=…)".into());
                crate::pipeline::audit_identity_refusal(&broker, &session_id, Some(&format!("database:{}", db.name)), &e);
                tracing::warn!(session = %session_id, database = %db.name, "refused a cleartext postgres connection: this listener requires mTLS");
                let _ = agent.write_all(&wire::error_response("FATAL", "28000", &format!("credential-broker: {e}"))).await;
                let _ = agent.flush().await;
                return;
            }
        }
    }
}

/// The agent's whole startup (from accept to the `StartupMessage`, the TLS handshake and, in jwt
/// mode, the password) must be done within `limits.header_read_timeout`: one deadline for all of
/// it, not one per read, or a connection that sends an `SSLRequest` every few seconds (each
/// answered `N`) or says nothing would hold one of the listener's connection slots for ever.
#[derive(Clone, Copy)]
struct StartupDeadline {
    at: tokio::time::Instant,
    limit: Duration,
}

impl StartupDeadline {
    fn from_now(limit: Duration) -> StartupDeadline {
        StartupDeadline { at: tokio::time::Instant::now() + limit, limit }
    }

    /// What is left of the startup's time (zero once it is over).
    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(tokio::time::Instant::now())
    }

    /// One read from the agent during startup, cut off at the deadline.
    async fn read<T>(&self, read: impl Future<Output = Result<T, WireError>>) -> Result<T, WireError> {
        tokio::time::timeout_at(self.at, read).await.unwrap_or(Err(WireError::Silent(self.limit)))
    }
}

/// Whether the agent presented no client certificate in the handshake.
fn no_client_certificate<S>(tls: &tokio_rustls::server::TlsStream<S>) -> bool {
    tls.get_ref().1.peer_certificates().is_none_or(|c| c.is_empty())
}

async fn serve_as<S: AsyncRead + AsyncWrite + Unpin + Send>(
    broker: Arc<Broker>,
    db: Arc<DatabaseListener>,
    keys: CancelKeys,
    mut agent: S,
    session_id: String,
    proof: Proof,
    deadline: StartupDeadline,
) {
    match start(&broker, &db, &keys, &mut agent, &session_id, proof, deadline).await {
        Ok(Some((upstream, minted, provider, identity, proof_expiry))) => {
            // Listed by `GET /v1/grants` while it lives; a revoke through the API ends it. From
            // here on the registration decides who revokes the lease.
            let mut lease = minted.hand_over();
            let registration = broker.sessions.register(&lease, &db.name, &session_id, &connect_scope(&db));
            let session = Session { broker: broker.clone(), db: db.clone(), identity: (*identity).clone(), session_id: session_id.clone() };
            let mut key = None;
            let stopped = registration.stopped();
            // The agent's JWT or client certificate running out ends the session like an expiry.
            let identity_expired = async {
                match proof_expiry {
                    Some(e) => {
                        tokio::time::sleep(e.at.duration_since(SystemTime::now()).unwrap_or_default()).await;
                        e.kind
                    }
                    None => std::future::pending().await,
                }
            };
            let ending = async {
                let renewed = |l: Lease| session.record_renewal(l, &registration, provider.as_ref());
                tokio::select! {
                    _ = stopped => End::Revoked,
                    _ = lifetime(provider.as_ref(), &mut lease, &broker.config.credentials.retry, renewed) => End::Expired,
                    kind = identity_expired => End::IdentityExpired(kind),
                }
            };
            if let Err(e) = session.relay(agent, upstream, ending, &keys, &mut key).await {
                tracing::debug!(session = %session_id, error = %e, "postgres session ended");
            }
            if let Some(key) = key {
                keys.remove(&key);
            }
            // The user was made for this session only. Revoked through the API: that revoke
            // took the registration's entry and revokes the lease, once.
            if registration.release() {
                let revoked = provider.revoke(&lease).await;
                if let Err(e) = &revoked {
                    tracing::warn!(session = %session_id, lease_id = %lease.id, error = %e, "dropping the session's postgres user failed");
                }
                session.audit_end(&lease, revoked.err()).await;
            }
            tracing::info!(session = %session_id, database = %db.name, "postgres session closed");
        }
        Ok(None) => {}
        Err(Refusal { code, message }) => {
            tracing::warn!(session = %session_id, database = %db.name, error = %message, code, "postgres session refused");
            // Bounded: an agent that does not read must not hold the connection slot.
            let fatal = wire::error_response("FATAL", code, &format!("credential-broker: {message}"));
            let _ = tokio::time::timeout(FINAL_WRITE_LIMIT, async {
                agent.write_all(&fatal).await?;
                agent.flush().await
            })
            .await;
        }
    }
}

/// How long the broker tries to hand the agent its last message (a `FATAL`) before it just closes.
const FINAL_WRITE_LIMIT: Duration = Duration::from_secs(2);

type Started = (UpstreamStream, MintedLease, SharedProvider, Arc<Identity>, Option<ProofExpiry>);

/// A lease minted for a session that has not been registered yet: nobody else knows it, so unless
/// it is handed over ([`MintedLease::hand_over`]) it is revoked when dropped, on every early
/// return of the startup (the agent went away before `AuthenticationOk`, the upstream login
/// failed, the credential is not a login). Otherwise the user would live until its TTL and the
/// broker API could not revoke it.
struct MintedLease {
    lease: Option<Lease>,
    provider: SharedProvider,
    session_id: String,
}

impl MintedLease {
    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("a minted lease is held until handed over")
    }

    /// The lease, now the caller's to revoke (the session registration's).
    fn hand_over(mut self) -> Lease {
        self.lease.take().expect("a minted lease is handed over once")
    }
}

impl Drop for MintedLease {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let (provider, session_id) = (self.provider.clone(), std::mem::take(&mut self.session_id));
        let revoke = async move {
            match provider.revoke(&lease).await {
                Ok(()) => tracing::info!(session = %session_id, lease_id = %lease.id, "revoked the postgres user of a session that did not start"),
                Err(e) => {
                    tracing::warn!(session = %session_id, lease_id = %lease.id, error = %e, "revoking the postgres user of a session that did not start failed; it lives until its TTL")
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(revoke);
            }
            Err(_) => {
                tracing::warn!(session = %self.session_id, "no runtime to revoke the postgres user of a session that did not start; it lives until its TTL")
            }
        }
    }
}

/// Why a session does not start: the SQLSTATE of the agent's `FATAL` and the reason.
struct Refusal {
    code: &'static str,
    message: String,
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal { code: "08004", message }
    }
}

/// The agent's identity for this session, or an audited refusal (SQLSTATE 28000).
///
/// In jwt mode the listener asks for a password in cleartext (`AuthenticationCleartextPassword`)
/// and the password is the agent's JWT, verified as a `Proxy-Authorization` bearer token is. Not
/// SCRAM or MD5: those prove knowledge of a password the server already holds without sending it,
/// and the broker holds no per-agent secret; it must see the token itself to check its signature
/// and claims. The listener is on loopback (in the pod), so the token does not cross the network.
async fn identify<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Broker,
    db: &DatabaseListener,
    agent: &mut S,
    session_id: &str,
    proof: Proof,
    deadline: StartupDeadline,
) -> Result<(Arc<Identity>, Option<ProofExpiry>), Refusal> {
    let result = match proof {
        Proof::Known(identity, expiry) => return Ok((identity, expiry)),
        Proof::Refused(e) => Err(e),
        Proof::Token => {
            agent.write_all(&wire::authentication_cleartext_password()).await.map_err(|e| e.to_string())?;
            agent.flush().await.map_err(|e| e.to_string())?;
            let missing = || IdentityError::Missing("this listener requires the agent's identity token (JWT) as the password, e.g. PGPASSWORD=<JWT>".into());
            match deadline.read(read_message(agent)).await {
                Ok(m) if m.tag == b'p' => match wire::cstr(m.body()) {
                    // The session ends when the token would no longer be accepted: its `exp` plus
                    // the same leeway the verifier allows (never later than a request could use it).
                    Ok((token, _)) if !token.is_empty() => {
                        broker.identities.for_token(token).await.map(|(identity, at)| (identity, at.map(|at| ProofExpiry { at, kind: ProofKind::Token })))
                    }
                    Ok(_) => Err(missing()),
                    Err(_) => Err(IdentityError::Invalid("malformed password message".into())),
                },
                // libpq without a password hangs up rather than answer.
                Err(WireError::Closed) => Err(missing()),
                Ok(_) => Err(IdentityError::Invalid("expected a password message".into())),
                Err(e) => return Err(e.to_string().into()),
            }
        }
    };
    result.map_err(|e| {
        crate::pipeline::audit_identity_refusal(broker, session_id, Some(&format!("database:{}", db.name)), &e);
        Refusal { code: "28000", message: e.to_string() }
    })
}

/// Startup to `AuthenticationOk`: `Ok(None)` when the agent went away or only asked to cancel.
async fn start<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    db: &DatabaseListener,
    keys: &CancelKeys,
    agent: &mut S,
    session_id: &str,
    proof: Proof,
    deadline: StartupDeadline,
) -> Result<Option<Started>, Refusal> {
    let startup = loop {
        let packet = match deadline.read(read_startup(agent)).await {
            Ok(p) => p,
            Err(WireError::Closed) => return Ok(None),
            Err(e) => return Err(e.to_string().into()),
        };
        match packet.code {
            // No TLS on the loopback listener: the agent goes on in cleartext.
            wire::SSL_REQUEST | wire::GSSENC_REQUEST => agent.write_all(b"N").await.map_err(|e| e.to_string())?,
            wire::CANCEL_REQUEST => {
                forward_cancel(db, keys, &packet.body).await;
                return Ok(None);
            }
            wire::PROTOCOL_3_0 => break packet,
            other => return Err(format!("unsupported protocol version {other}").into()),
        }
    };
    let params = startup.parameters().map_err(|e| e.to_string())?;
    // Who is asking is settled first: no identity, no mint and no upstream connection.
    let (identity, proof_expiry) = identify(broker, db, agent, session_id, proof, deadline).await?;
    // Identified: no longer a half-open connection the listener may close to make room.
    crate::listener::budget::establish_current();
    if let Some((_, asked)) = params.iter().find(|(k, _)| k == "database") {
        if asked != &db.database {
            return Err(format!("this listener serves database {:?} only, not {asked:?}", db.database).into());
        }
    }
    // A setting the agent asks for at startup is decided as its `SET` would be.
    if let Some((statement, reason)) = settings::refused_startup_setting(&params, &statements::database(db)) {
        audit_deny(broker, db, session_id, &identity, Some(&statement.scope), &reason).await;
        return Err(Refusal { code: "42501", message: format!("permission denied: {reason}") });
    }
    let mut forwarded = settings::forwarded_parameters(params, FORWARDED_PARAMETERS);
    forwarded.push(("database".into(), db.database.clone()));

    // No credential without the policy's yes: opening a session is `postgres:CONNECT` on the
    // database, decided before any user is minted.
    let ttl = connect_allowed(broker, db, &identity, session_id).await?;
    let provider = broker.providers.get(&db.provider).cloned().ok_or_else(|| format!("provider {:?} is not configured", db.provider))?;
    let lease = mint(broker, db, &provider, session_id, &identity, ttl).await?;
    // Revoked on every return below but the last, which hands it to the session.
    let minted = MintedLease { lease: Some(lease), provider: provider.clone(), session_id: session_id.to_string() };
    let Credential::Password { username, password } = &minted.lease().credential else {
        return Err(format!("provider {:?} does not mint database logins", db.provider).into());
    };
    let upstream = upstream::login(db, username, password, &forwarded).await.map_err(|e| e.to_string())?;
    agent.write_all(&wire::authentication_ok()).await.map_err(|e| e.to_string())?;
    agent.flush().await.map_err(|e| e.to_string())?;
    Ok(Some((upstream, minted, provider, identity, proof_expiry)))
}

/// The policy's decision on `postgres:CONNECT` for this agent: the credential's longest life
/// (the policy's `ttl_seconds`, else the configured default) when allowed; else an audited
/// refusal with SQLSTATE 42501 and the reason.
async fn connect_allowed(broker: &Broker, db: &DatabaseListener, identity: &Identity, session_id: &str) -> Result<std::time::Duration, Refusal> {
    let scope = connect_scope(db);
    let decision = broker.policy.decide(identity, &statements::request_facts(db, session_id, "CONNECT"), &scope);
    let default_ttl = broker.config.credentials.default_ttl;
    if decision.allow {
        return Ok(decision.ttl_seconds.map(std::time::Duration::from_secs).map_or(default_ttl, |t| t.min(default_ttl)));
    }
    audit_deny(broker, db, session_id, identity, Some(&scope), &decision.reason).await;
    tracing::info!(session = %session_id, database = %db.name, reason = %decision.reason, "postgres session denied by policy");
    Err(Refusal { code: "42501", message: format!("permission denied: opening a session on {} needs postgres:CONNECT: {}", db.database, decision.reason) })
}

/// A fresh user for this session, for the agent `identity`, living at most `ttl`: retried,
/// alerted on failure, recorded before use.
async fn mint(
    broker: &Arc<Broker>,
    db: &DatabaseListener,
    provider: &SharedProvider,
    session_id: &str,
    identity: &Identity,
    ttl: std::time::Duration,
) -> Result<Lease, String> {
    let identity = identity.clone();
    let scope = connect_scope(db);
    let req = MintRequest {
        credential_scope: provider.credential_scope(&scope, "CONNECT"),
        identity: identity.clone(),
        scope: scope.clone(),
        ttl,
        request_id: session_id.into(),
    };
    let minted = with_retries(&broker.config.credentials.retry, |_| provider.mint(&req)).await;
    let lease = match minted {
        Ok(lease) => {
            broker.alerts.minting_recovered(provider.name());
            lease
        }
        Err(failure) => {
            broker.alerts.minting_failure(provider.name(), &identity.agent_id, &identity.tenant, failure.attempts, &failure.last_error.message);
            return Err(format!("no database credential after {} attempts: {}", failure.attempts, failure.last_error.message));
        }
    };
    let mut record = AuditRecord::new(AuditEvent::Issue, session_id, &identity.agent_id, &identity.tenant);
    record.route = Some(format!("database:{}", db.name));
    record.decision = Some("allow".into());
    record.scope = Some(scope);
    record.credential_scope = Some(lease.credential_scope.clone());
    record.provider = Some(provider.name().to_string());
    record.lease_id = Some(lease.id.clone());
    record.expiry = Some(rfc3339(lease.expires_at));
    record.details = lease.details.clone();
    if let Err(e) = broker.audit(record).await {
        if let Err(revoke) = provider.revoke(&lease).await {
            tracing::warn!(session = %session_id, lease_id = %lease.id, error = %revoke, "revoking an unaudited postgres user failed; it lives until its TTL");
        }
        return Err(format!("the issuance could not be audited: {e}"));
    }
    tracing::info!(session = %session_id, lease_id = %lease.id, expiry = %rfc3339(lease.expires_at), "postgres user issued");
    Ok(lease)
}

/// What a session's user is minted for: `postgres:CONNECT` on the database.
fn connect_scope(db: &DatabaseListener) -> Scope {
    Scope {
        service: "postgres".into(),
        region: None,
        permissions: vec![Permission { action: "postgres:CONNECT".into(), resource: format!("postgres://{}/{}", db.upstream_host, db.database) }],
    }
}

/// Why the broker ends a session that neither side closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The lease ran out (not renewed, or no further).
    Expired,
    /// The lease was revoked through the broker API.
    Revoked,
    /// The agent's identity token or client certificate expired: ended like [`End::Expired`].
    IdentityExpired(ProofKind),
    /// The server reported a setting under which it reads SQL text differently from the broker.
    LexingChanged,
}

/// A renewal counts as one only when it moves the expiry at least this much: a provider that keeps
/// answering (about) the same expiry, e.g. at its `max_ttl`, would otherwise be asked again and
/// again as the expiry nears, each time recorded as a renewal.
const MIN_RENEWAL_PROGRESS: Duration = Duration::from_secs(1);

/// Resolves when `lease` expires. While the provider extends it, it is renewed ahead of expiry
/// (when a third of the remaining lifetime is left, with the retry policy); `renewed` is given the
/// lease with the provider's new expiry, when it is at least [`MIN_RENEWAL_PROGRESS`] later, and
/// says whether to adopt it (it could be recorded). The expiry is never set beyond what the
/// provider returned; `Ok(None)`, a failure or no progress (nothing recorded) stops the renewals
/// and the lease runs out. An earlier expiry than the current one is adopted as is (the session
/// ends sooner; not recorded as a renewal).
async fn lifetime<F, Fut>(provider: &dyn CredentialProvider, lease: &mut Lease, retry: &RetryConfig, mut renewed: F)
where
    F: FnMut(Lease) -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let remaining = lease.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(remaining * 2 / 3).await;
        let current: &Lease = lease;
        let expiry = match with_retries(retry, |_| provider.renew(current)).await {
            Ok(Some(expiry)) => expiry,
            Ok(None) => break,
            Err(failure) => {
                tracing::warn!(lease_id = %lease.id, attempts = failure.attempts, error = %failure.last_error, "renewing a database session's lease failed; the session ends at its expiry");
                break;
            }
        };
        if expiry < lease.expires_at {
            tracing::warn!(lease_id = %lease.id, expiry = %rfc3339(expiry), "the provider shortened a database session's lease; the session ends then");
            lease.expires_at = expiry;
            break;
        }
        if expiry < lease.expires_at + MIN_RENEWAL_PROGRESS {
            tracing::info!(lease_id = %lease.id, "the provider does not extend a database session's lease any further; the session ends at its expiry");
            break;
        }
        let mut proposed = lease.clone();
        proposed.expires_at = expiry;
        if !renewed(proposed).await {
            break;
        }
        lease.expires_at = expiry;
    }
    tokio::time::sleep(lease.expires_at.duration_since(SystemTime::now()).unwrap_or_default()).await;
}

struct Session {
    broker: Arc<Broker>,
    db: Arc<DatabaseListener>,
    identity: Identity,
    session_id: String,
}

/// The buffer for the agent's side of a session (tokio's default size, named: the relay checks whether a message fits).
const AGENT_BUFFER: usize = 8 * 1024;

/// Denials in flight: marker → the reason the agent will read.
type Pending = Arc<Mutex<HashMap<String, String>>>;

impl Session {
    /// Relays until either side ends or `ending` resolves (the session's user expired or was
    /// revoked); `key` gets the session's `BackendKeyData`, registered in `keys` for cancel
    /// requests while the session lives.
    async fn relay<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        agent: S,
        upstream: UpstreamStream,
        ending: impl Future<Output = End>,
        keys: &CancelKeys,
        key: &mut Option<[u8; 8]>,
    ) -> Result<(), WireError> {
        let pending: Pending = Arc::default();
        // False while a message is being written to the agent: if `ending` wins then, part of it
        // may have gone out (or sit in `agent_out`), and a FATAL after it would garble the stream.
        let mut whole_messages = true;
        let (agent_read, agent_write) = tokio::io::split(agent);
        let (upstream_read, upstream_write) = tokio::io::split(upstream);
        let mut agent_out = BufWriter::with_capacity(AGENT_BUFFER, agent_write);
        let end = {
            let to_upstream = async {
                let mut agent_in = BufReader::new(agent_read);
                let mut out = BufWriter::new(upstream_write);
                loop {
                    let message = read_message(&mut agent_in).await?;
                    let tag = message.tag;
                    let forward = match tag {
                        b'Q' => self.checked_query(&message, &pending).await?,
                        b'P' => self.checked_parse(&message, &pending).await?,
                        // Fast-path function calls run any function by OID, beyond what SQL scope
                        // sees: denied in band, like a denied statement (the server answers the
                        // stand-in with an error and ReadyForQuery, as it would a `FunctionCall`).
                        b'F' => {
                            let reason = "fast-path function calls are not allowed through the broker";
                            self.audit_denied(None, reason).await;
                            wire::query(&deny_marker(&pending, reason.to_string()))
                        }
                        _ => message.raw,
                    };
                    out.write_all(&forward).await?;
                    // Batch what the agent pipelined; flush once nothing more is waiting.
                    if agent_in.buffer().is_empty() {
                        out.flush().await?;
                    }
                    if tag == b'X' {
                        return Ok::<(), WireError>(());
                    }
                }
            };
            let to_agent = async {
                let mut upstream_in = BufReader::new(upstream_read);
                loop {
                    let message = read_message(&mut upstream_in).await?;
                    if message.tag == b'K' {
                        if let Ok(k) = <[u8; 8]>::try_from(message.body()) {
                            keys.insert(k);
                            *key = Some(k);
                        }
                    }
                    // The statement check reads SQL with standard_conforming_strings on and in
                    // UTF-8; a server that reports otherwise (a setting changed where no
                    // statement showed it: a function, `ALTER ROLE … SET` before this session,
                    // the server's own configuration) would read the next query differently.
                    // The report comes before the `ReadyForQuery` of what changed it, so only a
                    // query the agent pipelined behind that statement can reach the server first.
                    if message.tag == b'S' {
                        if let Some((name, value)) = settings::changed_lexing(message.body()) {
                            let statement = classify_setting(&name, &value, &statements::database(&self.db));
                            let reason = format!(
                                "the server reports {name} = {value}, under which it reads SQL text differently from the broker; the session is closed"
                            );
                            self.audit_denied(Some(&statement.scope), &reason).await;
                            return Ok::<End, WireError>(End::LexingChanged);
                        }
                    }
                    let raw = if message.tag == b'E' { replace_denial(message, &pending) } else { message.raw };
                    // Room first (waiting here leaves only whole messages buffered), so that a
                    // message that fits is then copied into the buffer at once: only one larger
                    // than the buffer can be cut off part-way.
                    if agent_out.buffer().len() + raw.len() >= AGENT_BUFFER {
                        agent_out.flush().await?;
                    }
                    whole_messages = false;
                    agent_out.write_all(&raw).await?;
                    whole_messages = true;
                    if upstream_in.buffer().is_empty() {
                        agent_out.flush().await?;
                    }
                }
            };
            tokio::select! {
                r = to_upstream => return r,
                r = to_agent => r?,
                end = ending => end,
            }
        };
        // The user expired or was revoked and is about to be dropped; say why before the
        // connection goes. A revoked session's running statement is cancelled, so the server's
        // backend ends as the upstream connection closes (the provider's revoke ends it too).
        let (code, message) = match end {
            End::Expired => ("57P01", "credential-broker: the session's database credential expired"),
            End::Revoked => ("57P01", "credential-broker: the broker revoked the session's database credential"),
            End::IdentityExpired(ProofKind::Token) => ("57P01", "credential-broker: the agent's identity token expired; reconnect with a fresh one"),
            End::IdentityExpired(ProofKind::Certificate) => ("57P01", "credential-broker: the agent's client certificate expired; reconnect with a fresh one"),
            End::LexingChanged => (
                "42501",
                "credential-broker: the server changed how it reads SQL text (standard_conforming_strings off or a client_encoding other than UTF8); the session is closed",
            ),
        };
        tracing::info!(session = %self.session_id, ?end, "postgres session ended by the broker");
        if whole_messages {
            // Bounded: an agent that stopped reading (its socket buffer full) would otherwise keep
            // this session, its registration, its user and its connection slot for ever.
            let said = tokio::time::timeout(FINAL_WRITE_LIMIT, async {
                agent_out.write_all(&wire::error_response("FATAL", code, message)).await?;
                agent_out.flush().await
            })
            .await;
            if said.is_err() {
                tracing::info!(session = %self.session_id, "the agent did not take the session's last message; closing");
            }
        } else {
            // Cut off in the middle of a message: the FATAL would be read as the rest of it. Just close.
            tracing::info!(session = %self.session_id, "closing without a FATAL: the agent was sent part of a message");
        }
        if let (End::Revoked | End::LexingChanged, Some(k)) = (end, *key) {
            // Bounded: a revoke waits for this session to end, and the provider ends the backends anyway.
            // After a lexing change, whatever the server still runs was read differently: stop it.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), forward_cancel(&self.db, keys, &k)).await;
        }
        Ok(())
    }

    /// A renewal the provider granted: recorded (`renew`) before it counts, then shown by
    /// `GET /v1/grants`. False when it cannot be recorded: the session keeps its old expiry.
    async fn record_renewal(&self, lease: Lease, registration: &Registration, provider: &dyn CredentialProvider) -> bool {
        let mut record = AuditRecord::new(AuditEvent::Renew, &self.session_id, &self.identity.agent_id, &self.identity.tenant);
        record.route = Some(format!("database:{}", self.db.name));
        record.provider = Some(provider.name().to_string());
        record.lease_id = Some(lease.id.clone());
        record.credential_scope = Some(lease.credential_scope.clone());
        record.expiry = Some(rfc3339(lease.expires_at));
        if let Err(e) = self.broker.audit(record).await {
            tracing::error!(session = %self.session_id, lease_id = %lease.id, error = %e, "the lease renewal could not be audited; the session ends at its old expiry");
            return false;
        }
        registration.set_expiry(lease.expires_at);
        tracing::info!(session = %self.session_id, lease_id = %lease.id, expiry = %rfc3339(lease.expires_at), "postgres session's lease renewed");
        true
    }

    async fn checked_query(&self, message: &wire::Message, pending: &Pending) -> Result<bytes::BytesMut, WireError> {
        let sql = wire::query_text(message.body())?;
        match self.judge(sql, false).await {
            None => Ok(message.raw.clone()),
            Some(reason) => Ok(wire::query(&deny_marker(pending, reason))),
        }
    }

    async fn checked_parse(&self, message: &wire::Message, pending: &Pending) -> Result<bytes::BytesMut, WireError> {
        let (name, sql, types) = wire::parse_fields(message.body())?;
        match self.judge(sql, true).await {
            None => Ok(message.raw.clone()),
            Some(reason) => Ok(wire::parse(name, &deny_marker(pending, reason), types)),
        }
    }

    /// `None` when every statement is allowed, else the first denial's reason (audited).
    async fn judge(&self, sql: &str, parse: bool) -> Option<String> {
        let decisions = statements::decide(&self.broker.policy, &self.identity, &self.db, &self.session_id, sql, parse);
        let denied = decisions.into_iter().find(|d| !d.decision.allow)?;
        let scope = denied.statement.as_ref().map(|s| &s.scope);
        self.audit_denied(scope, &denied.decision.reason).await;
        Some(denied.decision.reason)
    }

    /// The `revoke` record of a session that ended on its own (closed by either side, its lease
    /// or its agent's proof expired): its user is gone, or the record says why not.
    async fn audit_end(&self, lease: &Lease, provider_error: Option<crate::providers::ProviderError>) {
        let mut record = AuditRecord::new(AuditEvent::Revoke, &self.session_id, &self.identity.agent_id, &self.identity.tenant);
        record.route = Some(format!("database:{}", self.db.name));
        record.provider = Some(lease.provider.clone());
        record.lease_id = Some(lease.id.clone());
        record.credential_scope = Some(lease.credential_scope.clone());
        record.expiry = Some(rfc3339(lease.expires_at));
        record.details.insert("session_id".into(), self.session_id.clone());
        record.reason = Some(match provider_error {
            None => "the database session ended; its user was revoked at the source".into(),
            Some(e) => format!("the database session ended; the provider could not revoke its user at the source: {e}"),
        });
        if let Err(e) = self.broker.audit(record).await {
            tracing::error!(session = %self.session_id, error = %e, "auditing the end of a database session failed");
        }
    }

    async fn audit_denied(&self, scope: Option<&Scope>, reason: &str) {
        audit_deny(&self.broker, &self.db, &self.session_id, &self.identity, scope, reason).await;
        tracing::info!(session = %self.session_id, reason, "postgres statement denied");
    }
}

/// The `deny` record of something refused in a session of `db` (a statement, the session itself,
/// a setting), naming its scope when it has one.
async fn audit_deny(broker: &Broker, db: &DatabaseListener, session_id: &str, identity: &Identity, scope: Option<&Scope>, reason: &str) {
    let mut record = AuditRecord::new(AuditEvent::Deny, session_id, &identity.agent_id, &identity.tenant);
    record.route = Some(format!("database:{}", db.name));
    record.scope = scope.cloned();
    record.decision = Some("deny".into());
    record.reason = Some(reason.to_string());
    if let Err(e) = broker.audit(record).await {
        tracing::error!(session = %session_id, error = %e, "auditing a postgres refusal failed");
    }
}

/// Passes a `CancelRequest` for one of this listener's live sessions to the server, as is, over
/// a connection made like the session's: in cleartext only with `sslmode: disable`, else after
/// `SSLRequest` and the same TLS checks (PostgreSQL takes a cancel request inside TLS). Sending it
/// in cleartext would work too (the server checks no pg_hba rule for cancels), but the key would
/// then cross the network readable, and anyone who saw it could cancel the session's queries.
async fn forward_cancel(db: &DatabaseListener, keys: &CancelKeys, body: &[u8]) {
    if !keys.contains(body) {
        tracing::debug!(database = %db.name, "cancel request for an unknown session ignored");
        return;
    }
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
    packet.extend_from_slice(body);
    match upstream::connect(db).await {
        Ok(mut s) => {
            let _ = s.write_all(&packet).await;
            // Flush what TLS buffered and say goodbye; the server closes after a cancel anyway.
            let _ = s.flush().await;
            let _ = s.shutdown().await;
        }
        Err(e) => tracing::warn!(database = %db.name, error = %e, "forwarding a cancel request failed"),
    }
}

/// Registers a denial and returns the statement that stands in for the denied one: an identifier
/// alone, which the server refuses at parse time naming it.
fn deny_marker(pending: &Pending, reason: String) -> String {
    let marker = format!("cb_denied_{}", uuid::Uuid::new_v4().simple());
    pending.lock().unwrap_or_else(|e| e.into_inner()).insert(marker.clone(), reason);
    marker
}

#[cfg(test)]
mod tests;

/// The server's error for a stand-in statement becomes the broker's 42501 with the reason.
fn replace_denial(message: wire::Message, pending: &Pending) -> bytes::BytesMut {
    let text = wire::error_fields(message.body()).into_iter().find(|(f, _)| *f == b'M').map(|(_, m)| m).unwrap_or_default();
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    let Some(marker) = pending.keys().find(|m| text.contains(m.as_str())).cloned() else {
        return message.raw;
    };
    let reason = pending.remove(&marker).unwrap_or_default();
    wire::error_response("ERROR", "42501", &format!("permission denied by credential-broker: {reason}"))
}
