//! Refusals that happen before a request reaches the pipeline — unrouted hosts (IMDS included),
//! requests that are not proxy requests, malformed or oversized heads, connection-limit drops,
//! refused passthrough destinations, broker API 401/403 — are audited like policy denials.
//!
//! An attacker can cause these at will, so each kind is rate-limited: per (code, listener), the
//! first [`BURST`] refusals of a [`WINDOW`] are written one by one (and logged), the rest only
//! counted; when the window closes one `deny` record (and one log line) says how many were not
//! written singly. The key space is the fixed set of codes × listeners, so the map stays small
//! whatever the attacker varies (peers, hosts). Records never carry a token: callers pass a
//! reason written by the broker, never agent-supplied header values.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::{AuditEvent, AuditLog, AuditRecord};
use crate::audit::record::rfc3339;

/// Refusals of one kind written individually per window; the rest are aggregated.
pub const BURST: u32 = 20;
/// The aggregation window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How many distinct peers an aggregate record names (a sample, not a census).
const SAMPLE_PEERS: usize = 8;

/// The agent id of a refusal nobody proved an identity for.
pub const UNIDENTIFIED_AGENT: &str = "unidentified";

/// One refusal outside the request pipeline.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    /// Stable error code, as in the JSON answer (`unrouted_host`, `connection_limit`…).
    pub code: &'static str,
    /// Which listener refused (`proxy`, `transparent`, `endpoint`, `admin`, `database:NAME`…).
    pub listener: &'a str,
    pub request_id: &'a str,
    pub peer: Option<IpAddr>,
    /// The agent, when it proved an identity before being refused.
    pub agent: Option<(&'a str, &'a str)>,
    pub route: Option<&'a str>,
    /// The host (or host:port) the agent was trying to reach, if any.
    pub target: Option<&'a str>,
    /// Why, in the broker's words.
    pub reason: &'a str,
}

impl<'a> Refusal<'a> {
    /// A refusal with only the fields every one has.
    pub fn new(code: &'static str, listener: &'a str, request_id: &'a str, reason: &'a str) -> Self {
        Refusal { code, listener, request_id, peer: None, agent: None, route: None, target: None, reason }
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
    peers: BTreeSet<IpAddr>,
    first_suppressed: Option<SystemTime>,
    last_suppressed: Option<SystemTime>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window { started: now, written: 0, suppressed: 0, peers: BTreeSet::new(), first_suppressed: None, last_suppressed: None }
    }
}

type Key = (&'static str, String);

/// The rate-limited refusal auditor, shared by every listener.
pub struct RefusalAudit {
    log: AuditLog,
    tenant: String,
    burst: u32,
    window: Duration,
    windows: Mutex<HashMap<Key, Window>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl RefusalAudit {
    /// An auditor writing to `log`; `tenant` is the tenant of records without an identity.
    /// Starts a task (on the current runtime, if any) that closes windows even when the flood stops.
    pub fn new(log: AuditLog, tenant: &str, metrics: Option<Arc<crate::metrics::Metrics>>) -> Arc<Self> {
        Self::with_limits(log, tenant, metrics, BURST, WINDOW)
    }

    /// Like [`RefusalAudit::new`] with explicit limits (tests).
    pub fn with_limits(log: AuditLog, tenant: &str, metrics: Option<Arc<crate::metrics::Metrics>>, burst: u32, window: Duration) -> Arc<Self> {
        let audit = Arc::new(RefusalAudit { log, tenant: tenant.to_string(), burst, window, windows: Mutex::new(HashMap::new()), metrics });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(flush_periodically(Arc::downgrade(&audit), window));
        }
        audit
    }

    /// Record a refusal: written (and logged) if its kind is under the burst, else counted.
    /// Never blocks on the disk; a write failure is logged (the request is refused either way).
    pub fn record(&self, r: Refusal<'_>) {
        if let Some(m) = &self.metrics {
            m.refusal(r.code);
        }
        let now = Instant::now();
        let write_single = {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let key = (r.code, r.listener.to_string());
            let expired = windows.get(&key).is_some_and(|w| now.duration_since(w.started) >= self.window);
            if expired {
                if let Some(w) = windows.remove(&key) {
                    self.write_aggregate(&key, &w);
                }
            }
            let w = windows.entry(key).or_insert_with(|| Window::new(now));
            if w.written < self.burst {
                w.written += 1;
                true
            } else {
                w.suppressed += 1;
                if let Some(p) = r.peer {
                    if w.peers.len() < SAMPLE_PEERS {
                        w.peers.insert(p);
                    }
                }
                let t = SystemTime::now();
                w.first_suppressed.get_or_insert(t);
                w.last_suppressed = Some(t);
                false
            }
        };
        if write_single {
            tracing::warn!(code = r.code, listener = r.listener, request_id = r.request_id, peer = ?r.peer, target = r.target, reason = r.reason, "refused");
            self.append(single_record(&r, &self.tenant));
        }
    }

    /// Close every window that has run its time, writing the aggregate of those that suppressed.
    pub fn flush_expired(&self) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<Key> = windows.iter().filter(|(_, w)| now.duration_since(w.started) >= self.window).map(|(k, _)| k.clone()).collect();
        for key in expired {
            if let Some(w) = windows.remove(&key) {
                self.write_aggregate(&key, &w);
            }
        }
    }

    fn write_aggregate(&self, (code, listener): &Key, w: &Window) {
        if w.suppressed == 0 {
            return;
        }
        tracing::warn!(code, listener = %listener, suppressed = w.suppressed, window_s = self.window.as_secs(), "refused {} more connections or requests of this kind (not logged one by one)", w.suppressed);
        let request_id = crate::pipeline::new_request_id();
        let mut rec = AuditRecord::new(AuditEvent::Deny, &request_id, UNIDENTIFIED_AGENT, &self.tenant);
        rec.decision = Some("deny".into());
        rec.reason = Some(format!("{} further refusals of this kind were counted, not written one by one", w.suppressed));
        rec.details.insert("code".into(), (*code).into());
        rec.details.insert("listener".into(), listener.clone());
        rec.details.insert("aggregate".into(), "true".into());
        rec.details.insert("suppressed".into(), w.suppressed.to_string());
        rec.details.insert("window_seconds".into(), self.window.as_secs().to_string());
        if let Some(t) = w.first_suppressed {
            rec.details.insert("first".into(), rfc3339(t));
        }
        if let Some(t) = w.last_suppressed {
            rec.details.insert("last".into(), rfc3339(t));
        }
        if !w.peers.is_empty() {
            rec.details.insert("peers".into(), w.peers.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(","));
        }
        self.append(rec);
    }

    fn append(&self, rec: AuditRecord) {
        if let Err(e) = self.log.append_in_background(rec) {
            tracing::error!(error = %e, "cannot audit a refusal");
        }
    }
}

fn single_record(r: &Refusal<'_>, default_tenant: &str) -> AuditRecord {
    let (agent, tenant) = r.agent.unwrap_or((UNIDENTIFIED_AGENT, default_tenant));
    let mut rec = AuditRecord::new(AuditEvent::Deny, r.request_id, agent, tenant);
    rec.route = r.route.map(str::to_string);
    rec.decision = Some("deny".into());
    rec.reason = Some(r.reason.to_string());
    rec.details.insert("code".into(), r.code.into());
    rec.details.insert("listener".into(), r.listener.to_string());
    if let Some(p) = r.peer {
        rec.details.insert("peer".into(), p.to_string());
    }
    if let Some(t) = r.target {
        rec.details.insert("target".into(), t.to_string());
    }
    rec
}

async fn flush_periodically(audit: Weak<RefusalAudit>, window: Duration) {
    let mut tick = tokio::time::interval(window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match audit.upgrade() {
            Some(a) => a.flush_expired(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests;
