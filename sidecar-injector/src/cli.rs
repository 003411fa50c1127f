//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Mutating admission webhook that puts credential-broker next to agent containers.
#[derive(Debug, Parser)]
#[command(name = "sidecar-injector", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Inject manifests offline and print them (same mutation and checks as the webhook).
    Inject(InjectArgs),
    /// Validate an injector config file and exit.
    CheckConfig {
        /// Injector config file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
}

/// `serve` options.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain (cert-manager's `tls.crt`); reloaded when it changes.
    #[arg(long, default_value = "/etc/sidecar-injector/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key (cert-manager's `tls.key`); reloaded when it changes.
    #[arg(long, default_value = "/etc/sidecar-injector/tls/tls.key")]
    pub tls_key: PathBuf,
    /// Injector config file (YAML); defaults apply without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seconds between checks of the certificate files.
    #[arg(long, default_value_t = 5)]
    pub cert_reload_interval_secs: u64,
}

/// `inject` options.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifest file, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Injector config file (YAML); defaults apply without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Namespace for objects that name none.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Treat the namespace as labelled credential-broker/inject=enabled (the webhook learns
    /// this from its namespaceSelector; offline there is no cluster to ask).
    #[arg(long)]
    pub namespace_label: bool,
}
