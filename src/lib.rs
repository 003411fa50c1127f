//! credential-broker: a sidecar proxy that lets AI agents call APIs without ever holding a secret.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod broker;
pub mod classify;
pub mod cli;
pub mod config;
pub mod explain;
pub mod identity;
pub mod inject;
pub mod iptables;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod postgres;
pub mod providers;
pub mod telemetry;
pub mod tls;
pub mod upstream;
