//! Wiring: bind every listener, run until a signal, then drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::Config;
use crate::listener::{self, accept_loop, endpoint, forward, health, transparent, ConnectionBudget, Drain};

/// The addresses actually bound (useful with port 0), written to `--addresses-file`.
#[derive(Debug, Serialize)]
pub struct BoundAddresses {
    pub proxy: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub transparent: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// Postgres listeners by database name.
    pub databases: BTreeMap<String, SocketAddr>,
    pub ca_cert: String,
}

impl BoundAddresses {
    /// Every listener address (for keeping passthrough tunnels off them).
    pub fn listener_addresses(&self) -> Vec<SocketAddr> {
        let singles = [self.proxy, self.admin, self.transparent, self.health].into_iter().flatten();
        singles.chain(self.endpoints.values().copied()).chain(self.databases.values().copied()).collect()
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener on {addr}"))
}

pub async fn run(config: Config, addresses_file: Option<&Path>) -> anyhow::Result<()> {
    let broker = Broker::build(config).await?;
    let config = broker.config.clone();
    let drain = Drain::new();
    // Each agent-facing listener has its own budget (limits.max_connections, at most
    // limits.max_connections_per_peer from one address): a flood of one cannot starve another.
    let budget = |name: &str| ConnectionBudget::new(name, config.limits.max_connections, config.limits.max_connections_per_peer);
    let proxy_builder = Arc::new(listener::server_builder(&config.limits, true));
    let endpoint_builder = Arc::new(listener::server_builder(&config.limits, false));
    let mut tasks = Vec::new();
    let mut bound = BoundAddresses {
        proxy: None,
        admin: None,
        transparent: None,
        health: None,
        endpoints: BTreeMap::new(),
        databases: BTreeMap::new(),
        ca_cert: config.tls.ca_cert_path.display().to_string(),
    };

    if let Some(addr) = config.listeners.proxy {
        let l = bind(addr, "proxy").await?;
        bound.proxy = Some(l.local_addr()?);
        let (b, d, builder) = (broker.clone(), drain.clone(), proxy_builder.clone());
        tasks.push(tokio::spawn(accept_loop(l, budget("proxy"), broker.refusals.clone(), move |stream, _| {
            forward::serve(b.clone(), builder.clone(), d.clone(), stream)
        })));
    }
    // One cancel-key set per database, shared by its own listener and the transparent listener.
    let databases: Arc<[transparent::PostgresTarget]> =
        config.databases.iter().map(|db| transparent::PostgresTarget { db: Arc::new(db.clone()), keys: crate::postgres::CancelKeys::default() }).collect();
    if let Some(addr) = config.listeners.transparent {
        let l = bind(addr, "transparent").await?;
        bound.transparent = Some(l.local_addr()?);
        let (b, d, builder, dbs) = (broker.clone(), drain.clone(), proxy_builder.clone(), databases.clone());
        tasks.push(tokio::spawn(accept_loop(l, budget("transparent"), broker.refusals.clone(), move |stream, peer| {
            transparent::serve(b.clone(), builder.clone(), d.clone(), dbs.clone(), stream, peer)
        })));
    }
    if let Some(addr) = config.listeners.health {
        let l = bind(addr, "health").await?;
        bound.health = Some(l.local_addr()?);
        let (b, d, builder) = (broker.clone(), drain.clone(), endpoint_builder.clone());
        // Like the admin port: its own budget, so agents cannot starve the kubelet's probes.
        tasks.push(tokio::spawn(accept_loop(l, ConnectionBudget::new("health", 16, 16), broker.refusals.clone(), move |stream, _| {
            let (b, d, builder) = (b.clone(), d.clone(), builder.clone());
            async move { listener::serve_connection(builder, stream, &d, &b.refusals.clone(), move |req| health::handle(b.clone(), req)).await }
        })));
    }
    for route in &config.routes {
        let Some(target) = endpoint::endpoint_target(route) else { continue };
        let Some(ep) = &route.endpoint else { continue };
        let l = bind(ep.listen, &format!("endpoint {}", route.name)).await?;
        bound.endpoints.insert(route.name.clone(), l.local_addr()?);
        let (b, d, builder, target) = (broker.clone(), drain.clone(), endpoint_builder.clone(), Arc::new(target));
        tasks.push(tokio::spawn(accept_loop(l, budget(&format!("endpoint:{}", route.name)), broker.refusals.clone(), move |stream, _| {
            endpoint::serve(b.clone(), builder.clone(), d.clone(), target.clone(), stream)
        })));
    }
    for target in databases.iter() {
        let db = &target.db;
        let l = bind(db.listen, &format!("database {}", db.name)).await?;
        bound.databases.insert(db.name.clone(), l.local_addr()?);
        tasks.push(tokio::spawn(crate::postgres::serve(l, broker.clone(), db.clone(), target.keys.clone(), budget(&format!("database:{}", db.name)))));
    }
    if let Some(addr) = config.listeners.admin {
        let l = bind(addr, "admin").await?;
        bound.admin = Some(l.local_addr()?);
        let (b, d, builder) = (broker.clone(), drain.clone(), endpoint_builder.clone());
        // The admin port gets its own small connection budget so agents cannot starve probes.
        tasks.push(tokio::spawn(accept_loop(l, ConnectionBudget::new("admin", 64, 64), broker.refusals.clone(), move |stream, peer| {
            let (b, d, builder) = (b.clone(), d.clone(), builder.clone());
            async move {
                listener::serve_connection(builder, stream, &d, &b.refusals.clone(), move |req| crate::admin::handle(b.clone(), Some(peer.ip()), req)).await
            }
        })));
    }
    tasks.push(crate::policy::spawn_reloader(broker.policy.clone(), config.policy.reload_interval));

    // Until this is set every passthrough destination is refused (fail closed while binding).
    broker.own_listeners.set(bound.listener_addresses());
    tracing::info!(proxy = ?bound.proxy, admin = ?bound.admin, transparent = ?bound.transparent, health = ?bound.health, endpoints = ?bound.endpoints, databases = ?bound.databases, ca_cert = %bound.ca_cert, audit = %config.audit.path.display(), "credential-broker listening");
    if let Some(path) = addresses_file {
        std::fs::write(path, serde_json::to_vec_pretty(&bound)?).with_context(|| format!("writing {}", path.display()))?;
    }
    broker.set_ready(true);

    shutdown_signal().await;
    tracing::info!(grace_ms = config.limits.drain_grace.as_millis() as u64, "shutting down: draining connections");
    broker.set_ready(false);
    for t in &tasks {
        t.abort();
    }
    // One grace period for both: connections finishing their requests, and upgraded connections
    // (WebSocket), which hyper no longer tracks once it has handed them off.
    let open_tunnels = broker.tunnels.len();
    let (connections, tunnels) = tokio::join!(drain.drain(config.limits.drain_grace), broker.tunnels.drain(config.limits.drain_grace));
    if connections && tunnels {
        tracing::info!(upgraded_connections = open_tunnels, "drained");
    } else {
        tracing::warn!(upgraded_connections_closed = !tunnels, "grace period over; closing remaining connections");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
