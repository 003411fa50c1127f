//! Kubernetes mutating admission webhook that puts credential-broker next to agent containers.
//!
//! [`mutate::mutate`] is the whole decision (pure, no I/O); [`server`] serves it over HTTPS as
//! an admission webhook and [`offline`] applies it to manifests on disk.
#![forbid(unsafe_code)]

pub mod admission;
pub mod ambient;
pub mod cli;
pub mod config;
pub mod conventions;
pub mod mutate;
pub mod names;
pub mod offline;
pub mod server;

pub use config::InjectorConfig;
pub use mutate::{mutate, Denial, Mutation, NamespaceInfo};
