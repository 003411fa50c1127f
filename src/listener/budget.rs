//! Connection budgets: every listener has its own, every peer address a quota within it, and the
//! connections that are cheapest for an attacker to hold are the first to go.
//!
//! A connection is *waiting* while no request of it is in flight: before its first request head
//! (or, on a database listener, before the agent has identified itself), and between keep-alive
//! requests. A half-sent head is waiting; so is a CONNECT tunnel whose TLS handshake or first
//! inner head has not arrived. Waiting connections are what a slowloris is made of, and a client
//! loses nothing but a reconnect when one of them is closed, as nginx reuses idle keep-alive slots.
//!
//! Among waiting connections, those that have never completed a request head go first (oldest
//! first), and only then those idle after serving one: a slowloris never completes a head, while
//! a client's CONNECT tunnel waiting for its TLS handshake, or a keep-alive between requests, has.
//! Otherwise an attacker opening connections fast enough could push out a tunnel in the few
//! milliseconds of its handshake.
//!
//! So a new connection is admitted like this, on its listener:
//! 1. its peer already holds `max_connections_per_peer`: the peer's own longest-waiting
//!    connection is closed to make room, or, with none waiting, the new one is refused;
//! 2. the listener holds `max_connections`: the listener's longest-waiting connection (any peer)
//!    is closed to make room, or, with none waiting, the new one is refused.
//!
//! The newest connection is never the one evicted, so a client that sends its head promptly gets
//! served however many half-open connections another keeps opening: to push it out before its
//! head arrives, an attacker must open a whole listener's worth of connections in that time.
//!
//! What this does not stop: requests in flight are never evicted, so a client with requests the
//! policy allows (slow uploads, slow upstreams, up to `limits.request_timeout`) can hold its
//! peer's quota, and from one address (every agent of a sidecar is 127.0.0.1) the whole listener.
//! Per-identity quotas would need the identity before admission, which the TCP accept has not.
//! Established Postgres sessions are not evicted either (their state would be lost).
//!
//! The budget follows a connection into the tunnels it opens ([`carry`]): a CONNECT tunnel holds
//! its slot until it closes, and requests inside it count as in flight on that slot.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the listener's {0} connections are all serving requests")]
    ListenerFull(usize),
    #[error("this peer's {0} connections (limits.max_connections_per_peer) are all serving requests")]
    PeerQuota(usize),
}

/// One listener's budget. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ConnectionBudget {
    inner: Arc<Inner>,
}

struct Inner {
    listener: Arc<str>,
    capacity: usize,
    per_peer: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Hands out slot ids and waiting positions; only ever grows, so it orders both by age.
    next_seq: u64,
    slots: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
    /// Waiting connections in eviction order: never served before served, then longest-waiting
    /// first. (tier, position) → slot id.
    waiting: BTreeMap<WaitKey, u64>,
}

/// Where a waiting connection stands in the eviction order: tier 0 never completed a request
/// head, tier 1 did; then by position (age).
type WaitKey = (u8, u64);

struct Entry {
    peer: IpAddr,
    in_flight: u32,
    /// Whether a request head of it ever arrived.
    served: bool,
    established: bool,
    /// Its key in `waiting` while it waits.
    waiting_at: Option<WaitKey>,
    evict: watch::Sender<bool>,
}

/// An admitted connection: its place in the budget until dropped (with every clone).
pub struct Slot {
    id: u64,
    inner: Arc<Inner>,
    evicted: watch::Receiver<bool>,
}

/// The outcome of a successful admission.
pub struct Admitted {
    pub slot: Arc<Slot>,
    /// The peer whose waiting connection was closed to make room, if one was.
    pub evicted: Option<IpAddr>,
}

impl ConnectionBudget {
    /// `capacity` connections on `listener`, at most `per_peer` of them from one address.
    pub fn new(listener: impl Into<Arc<str>>, capacity: usize, per_peer: usize) -> Self {
        let inner = Inner { listener: listener.into(), capacity: capacity.max(1), per_peer: per_peer.clamp(1, capacity.max(1)), state: Mutex::default() };
        ConnectionBudget { inner: Arc::new(inner) }
    }

    /// The listener's name, as audit records and logs give it.
    pub fn listener(&self) -> &Arc<str> {
        &self.inner.listener
    }

    /// Admit a connection from `peer`, closing a waiting one if that is what makes room.
    pub fn admit(&self, peer: IpAddr) -> Result<Admitted, Refused> {
        let mut state = self.inner.lock();
        let mut evicted = None;
        if state.per_peer.get(&peer).copied().unwrap_or(0) >= self.inner.per_peer {
            let victim = state.waiting.values().copied().find(|id| state.slots.get(id).is_some_and(|e| e.peer == peer));
            let victim = victim.ok_or(Refused::PeerQuota(self.inner.per_peer))?;
            evicted = state.evict(victim);
        }
        if state.slots.len() >= self.inner.capacity {
            let victim = state.waiting.values().next().copied().ok_or(Refused::ListenerFull(self.inner.capacity))?;
            evicted = state.evict(victim).or(evicted);
        }
        let id = state.seq();
        let (evict, receiver) = watch::channel(false);
        state.slots.insert(id, Entry { peer, in_flight: 0, served: false, established: false, waiting_at: None, evict });
        *state.per_peer.entry(peer).or_default() += 1;
        state.start_waiting(id);
        Ok(Admitted { slot: Arc::new(Slot { id, inner: self.inner.clone(), evicted: receiver }), evicted })
    }

    /// Connections held now (tests, metrics).
    pub fn held(&self) -> usize {
        self.inner.lock().slots.len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn start_waiting(&mut self, id: u64) {
        let at = self.seq();
        if let Some(e) = self.slots.get_mut(&id) {
            if e.in_flight == 0 && !e.established && e.waiting_at.is_none() {
                let key = (u8::from(e.served), at);
                e.waiting_at = Some(key);
                self.waiting.insert(key, id);
            }
        }
    }

    fn stop_waiting(&mut self, id: u64) {
        if let Some(at) = self.slots.get_mut(&id).and_then(|e| e.waiting_at.take()) {
            self.waiting.remove(&at);
        }
    }

    /// Take a slot out of the budget; its connection is told to close. The evicted peer.
    fn evict(&mut self, id: u64) -> Option<IpAddr> {
        let entry = self.remove(id)?;
        let _ = entry.evict.send(true);
        Some(entry.peer)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        self.stop_waiting(id);
        let entry = self.slots.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&entry.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }
}

impl Slot {
    /// A request of this connection is in flight until the guard drops (with its response body).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        let mut state = self.inner.lock();
        state.stop_waiting(self.id);
        if let Some(e) = state.slots.get_mut(&self.id) {
            e.in_flight += 1;
            e.served = true;
        }
        RequestGuard { slot: self.clone() }
    }

    /// The connection has identified itself for good (a Postgres session past its startup): it
    /// is never evicted from now on.
    pub fn establish(&self) {
        let mut state = self.inner.lock();
        state.stop_waiting(self.id);
        if let Some(e) = state.slots.get_mut(&self.id) {
            e.established = true;
        }
    }

    /// Resolves when this connection is evicted to make room for another; never otherwise.
    pub async fn evicted(&self) {
        let mut evicted = self.evicted.clone();
        if evicted.wait_for(|e| *e).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.lock().remove(self.id);
    }
}

/// A request in flight; see [`Slot::begin_request`].
pub struct RequestGuard {
    slot: Arc<Slot>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut state = self.slot.inner.lock();
        let idle = state.slots.get_mut(&self.slot.id).is_some_and(|e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.in_flight == 0
        });
        if idle {
            state.start_waiting(self.slot.id);
        }
    }
}

/// Who a connection is: its listener, peer and slot. Set for the connection's task by the
/// accept loop and carried into the tunnels it opens, so code deep in a connection (the HTTP
/// server, a Postgres session) can reach its slot without threading it through every call.
#[derive(Clone)]
pub struct ConnectionContext {
    pub listener: Arc<str>,
    pub peer: Option<SocketAddr>,
    pub slot: Option<Arc<Slot>>,
}

tokio::task_local! {
    static CURRENT: ConnectionContext;
}

/// The context of the connection this task serves, if it serves one.
pub fn current() -> Option<ConnectionContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Run `fut` as the connection `ctx`: it sees `ctx` as [`current`], and it is dropped (closing
/// the connection it owns) if the connection is evicted.
pub async fn run_in<F: Future<Output = ()>>(ctx: ConnectionContext, fut: F) {
    let slot = ctx.slot.clone();
    CURRENT
        .scope(ctx, async move {
            match slot {
                Some(slot) => {
                    tokio::select! {
                        _ = fut => {}
                        _ = slot.evicted() => {}
                    }
                }
                None => fut.await,
            }
        })
        .await
}

/// `fut` (to be spawned: a tunnel the current connection opens) as part of the current
/// connection: it holds the connection's slot until it ends and is closed with it.
pub fn carry<F: Future<Output = ()>>(fut: F) -> impl Future<Output = ()> {
    let ctx = current();
    async move {
        match ctx {
            Some(ctx) => run_in(ctx, fut).await,
            None => fut.await,
        }
    }
}

/// Like [`carry`], for a tunnel whose traffic the broker cannot see (a passthrough): it counts
/// as a request in flight for its whole life, so it is never evicted as waiting.
pub fn carry_busy<F: Future<Output = ()>>(fut: F) -> impl Future<Output = ()> {
    let guard = current().and_then(|c| c.slot).map(|s| s.begin_request());
    carry(async move {
        let _guard = guard;
        fut.await
    })
}

/// Mark the current connection established (see [`Slot::establish`]); no-op outside one.
pub fn establish_current() {
    if let Some(slot) = current().and_then(|c| c.slot) {
        slot.establish();
    }
}

#[cfg(test)]
mod tests;
